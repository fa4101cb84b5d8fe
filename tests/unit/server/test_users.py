"""Gateway users: tokens shown once, stored hashed, checked in constant time."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tessera.errors import ConfigError, NotFoundError, UsageError
from tessera.workflows.environment import init_environment
from tessera.workflows.users import add_user, authenticate, list_users, remove_user


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return init_environment(tmp_path / "home", nodes=3, passphrase=b"unit test passphrase").home


def test_add_authenticate_remove(home: Path) -> None:
    token = add_user(home, "alice", "researcher")
    other = add_user(home, "olga@clinic", "officer")
    assert len(token) >= 43 and token != other
    user = authenticate(home, token)
    assert user is not None and (user.name, user.role) == ("alice", "researcher")
    assert authenticate(home, other).role == "officer"  # type: ignore[union-attr]
    assert authenticate(home, token[:-1]) is None
    assert authenticate(home, "") is None
    stored = (home / "gateway" / "users.json").read_text()
    assert token not in stored and other not in stored
    assert stat.S_IMODE((home / "gateway" / "users.json").stat().st_mode) == 0o600
    assert [u.name for u in list_users(home)] == ["alice", "olga@clinic"]
    remove_user(home, "alice")
    assert authenticate(home, token) is None
    with pytest.raises(NotFoundError):
        remove_user(home, "alice")


def test_bad_names_roles_and_duplicates(home: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="role"):
        add_user(home, "bob", "admin")
    with pytest.raises(UsageError, match="name"):
        add_user(home, "bob smith", "researcher")
    add_user(home, "bob", "steward")
    with pytest.raises(UsageError, match="exists"):
        add_user(home, "bob", "researcher")
    with pytest.raises(ConfigError):
        add_user(tmp_path / "nowhere", "bob", "researcher")
