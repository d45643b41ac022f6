import pytest

from tests.support.pg import ShopDb


def test_shop_database_is_seeded_and_app_role_needs_its_password(shop: ShopDb) -> None:
    import psycopg

    rows = shop.admin_query("SELECT count(*) FROM customers")
    assert rows == [(5,)]
    with psycopg.connect(shop.app_conninfo) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("hoop_app",)
    wrong = shop.app_conninfo.replace(shop.app_password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()
