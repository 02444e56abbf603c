"""Settings: typed parsing, safe defaults, and refusing to run production with a weak secret."""
import pytest

from app import create_app
from app.config import DEV_JWT_SECRET, ConfigError, from_env


def production(database_url, **overrides):
    return {"DATABASE_URL": database_url, "USE_MOCK": False, "DEBUG": False, "TESTING": False, **overrides}


@pytest.mark.parametrize("secret", ["", DEV_JWT_SECRET, "short-secret"])
def test_production_refuses_a_missing_default_or_short_secret(database_url, secret):
    with pytest.raises(ConfigError, match="secrets.token_urlsafe"):
        create_app(production(database_url, JWT_SECRET=secret))


def test_production_starts_with_a_strong_secret(database_url):
    app = create_app(production(database_url, JWT_SECRET="x" * 40))
    assert app.config["JWT_SECRET"] == "x" * 40


def test_mock_mode_may_use_the_dev_secret(database_url):
    app = create_app({"DATABASE_URL": database_url, "USE_MOCK": True, "JWT_SECRET": "", "TESTING": True})
    assert app.config["JWT_SECRET"] == DEV_JWT_SECRET


def test_defaults():
    config = from_env({})
    assert config["PORT"] == 4000
    assert config["DATABASE_URL"] == "sqlite:///causeloop.db"
    assert config["CORS_ORIGINS"] == ["http://localhost:3000"]
    assert config["RATE_LIMIT"] == "600/minute"
    assert config["STREAM_HEARTBEAT_S"] == 5.0
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024


@pytest.mark.parametrize("name,value", [("PORT", "http"), ("USE_MOCK", "maybe"), ("STREAM_HEARTBEAT_S", "0"),
                                        ("RATE_LIMIT", "lots"), ("TRUST_PROXY", "2")])
def test_bad_values_fail_fast_naming_the_setting(name, value):
    with pytest.raises(ConfigError, match=name):
        from_env({name: value})


def test_lists_and_flags_are_parsed():
    config = from_env({"CORS_ORIGINS": "https://a.example, https://b.example", "TRUST_PROXY": "true",
                       "USE_MOCK": "1", "CLERK_AUTHORIZED_PARTIES": "https://app.example"})
    assert config["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert config["TRUST_PROXY"] is True and config["USE_MOCK"] is True
    assert config["CLERK_AUTHORIZED_PARTIES"] == ["https://app.example"]


def test_unsupported_database_url_is_refused(tmp_path):
    with pytest.raises(ValueError, match="DATABASE_URL"):
        create_app({"DATABASE_URL": "mysql://x/y", "USE_MOCK": True, "TESTING": True})
