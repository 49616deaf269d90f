import pytest

from migrator.errors import ConfigError
from migrator.model.urls import parse_mysql_url, redact


def test_redact_hides_every_password():
    text = "mysql://app:s3cr%40t@db:3306/x and mongodb://u:pw@m:27017/?a=b"
    assert redact(text) == "mysql://app:***@db:3306/x and mongodb://u:***@m:27017/?a=b"


def test_parse_mysql_url():
    u = parse_mysql_url("mysql://app:p%40ss@db.example:3307/shop?ssl=1")
    assert (u.host, u.port, u.user, u.password, u.database) == (
        "db.example",
        3307,
        "app",
        "p@ss",
        "shop",
    )
    assert "p@ss" not in str(u) and "p@ss" not in repr(u)


def test_bad_scheme_names_the_setting():
    with pytest.raises(ConfigError, match="--source: expected a mysql:// URL"):
        parse_mysql_url("postgres://x/y", "--source")
