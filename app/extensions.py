"""Extensions, created unbound: nothing here touches a database or the network at import."""
from flask_cors import CORS
from flask_limiter import Limiter
from flask_sock import Sock

from .api import Api
from .auth import build_protector
from .ratelimit import client_ip, current_limit, request_identity, unlimited

api = Api()
protector = build_protector()
sock = Sock()
limiter = Limiter(key_func=client_ip, application_limits=[current_limit],
                  application_limits_exempt_when=unlimited, request_identifier=request_identity)
cors = CORS()
