"""Extensions, created unbound: nothing here touches a database or the network at import."""
from flask_sock import Sock

from .api import Api
from .auth import build_protector

api = Api()
protector = build_protector()
sock = Sock()
