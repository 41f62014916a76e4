"""``taskrank token create``: a token printed once, stored only as its hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from taskrank.queue import keys
from taskrank.queue.embedded import EmbeddedRedis
from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.running import register, unregister
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token, hash_token
from taskrank.scripts.tokens import main


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, settings: Settings, r: redis.Redis) -> redis.Redis:
    """TASKRANK_REDIS_URL points at the test Redis (flushed); returns a client on it."""
    monkeypatch.setenv("TASKRANK_REDIS_URL", settings.redis_url)
    return r


def _values(r: redis.Redis) -> str:
    """Every key, hash field and hash value in the database, as one string."""
    parts = []
    for key in r.scan_iter():
        parts.append(key)
        if r.type(key) == "hash":
            parts += [text for pair in r.hgetall(key).items() for text in pair]
        elif r.type(key) == "set":
            parts += r.smembers(key)
    return "\n".join(parts)


def test_create_prints_token_last_and_stores_only_its_hash(env, capsys):
    """The token is the last stdout line; Redis holds its SHA-256 and role, never the token."""
    assert main(["create", "--role", "platform"]) == 0
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1]
    assert token.startswith("tr_") and len(token) > 40
    assert env.hgetall(keys.token_key(hash_token(token)))["role"] == "platform"
    assert token not in _values(env)
    assert env.scard(keys.admin_tokens_key()) == 0


def test_stdout_is_only_the_token(env, capsys):
    """Scripts can do TOKEN=$(taskrank token create ...): the explanation goes to stderr."""
    assert main(["create", "--role", "admin"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.out.startswith("tr_")
    assert "shown only this once" in captured.err
    assert env.sismember(keys.admin_tokens_key(), hash_token(captured.out.strip()))


def test_expert_token_records_its_expert(env, capsys):
    """An expert token is stored with the expert it acts for."""
    assert main(["create", "--role", "expert", "--expert-id", "dr-lee"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    fields = env.hgetall(keys.token_key(hash_token(token)))
    assert fields["role"] == "expert" and fields["expert_id"] == "dr-lee"


def test_expert_role_without_expert_id_is_exit_2(env, capsys):
    """--role expert without --expert-id: exit 2, a message naming the flag, nothing stored."""
    assert main(["create", "--role", "expert"]) == 2
    captured = capsys.readouterr()
    assert "--expert-id" in captured.err and captured.out == ""
    assert env.dbsize() == 0


def test_expert_id_on_another_role_is_exit_2(env, capsys):
    """--expert-id with a non-expert role is refused the same way."""
    assert main(["create", "--role", "platform", "--expert-id", "dr-lee"]) == 2
    assert "--expert-id" in capsys.readouterr().err
    assert env.dbsize() == 0


def test_unknown_role_is_exit_2(env, capsys):
    """An unknown role is an argparse error (exit 2) that lists the valid roles."""
    with pytest.raises(SystemExit) as exit_info:
        main(["create", "--role", "superuser"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "superuser" in err and "platform" in err
    assert env.dbsize() == 0


def test_without_redis_url_uses_the_embedded_data_dir(monkeypatch, tmp_path, capsys):
    """With no TASKRANK_REDIS_URL the token lands in the embedded Redis of TASKRANK_DATA_DIR
    (here a stopped server's data)."""
    monkeypatch.delenv("TASKRANK_REDIS_URL", raising=False)
    monkeypatch.setenv("TASKRANK_DATA_DIR", str(tmp_path))
    with EmbeddedRedis(tmp_path):
        pass
    assert main(["create", "--role", "platform"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.hgetall(keys.token_key(hash_token(token)))["role"] == "platform"
        client.close()


@pytest.mark.parametrize("expert_id", ["bad:id/x", "", "..", "e" * 129, "dr lee"])
def test_an_expert_id_the_api_refuses_is_refused(env, capsys, expert_id):
    """--expert-id follows the API's id rule: anything else exits 2 with a one-line reason
    and stores nothing (a token for it could never be used)."""
    assert main(["create", "--role", "expert", "--expert-id", expert_id]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("taskrank token: --expert-id: must be 1-128 characters")
    assert captured.err.count("\n") == 1
    assert list(env.scan_iter()) == []


def test_the_store_refuses_such_an_expert_id_too(env):
    """create_token itself checks the id, for callers other than the command."""
    with pytest.raises(InvalidInputError, match="expert_id"):
        create_token(env, "expert", "bad:id/x")
    assert list(env.scan_iter()) == []


def test_the_command_refuses_it_as_a_process(env, settings: Settings):
    """`taskrank token create --expert-id 'bad:id/x'`, run as a process: exit 2, the
    reason on stderr, nothing on stdout, nothing stored."""
    command = [str(Path(sys.executable).with_name("taskrank")), "token", "create", "--role",
               "expert", "--expert-id", "bad:id/x"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "TASKRANK_REDIS_URL": settings.redis_url})
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "--expert-id: must be 1-128 characters of A-Z a-z 0-9 . _ -, got 'bad:id/x'" in (
        done.stderr)
    assert list(env.scan_iter()) == []
def test_a_shell_without_the_servers_data_dir_finds_the_running_server(
        monkeypatch, tmp_path, capsys, settings, r):
    """The first hour: the server runs with another TASKRANK_DATA_DIR; token create finds it
    through the note 'taskrank serve' left, says so, and the token works on that server."""
    served = settings.replace(data_dir=str(tmp_path / "server-var"),
                              run_dir=os.environ["TASKRANK_RUN_DIR"])
    note = register(served, "http://127.0.0.1:8200")
    try:
        monkeypatch.delenv("TASKRANK_REDIS_URL", raising=False)
        monkeypatch.chdir(tmp_path)
        assert main(["create", "--role", "platform"]) == 0
    finally:
        unregister(note)
    captured = capsys.readouterr()
    token = captured.out.strip().splitlines()[-1]
    assert r.hgetall(keys.token_key(hash_token(token)))["role"] == "platform"
    assert "taskrank server at http://127.0.0.1:8200" in captured.err
    assert not (tmp_path / "var").exists()


def test_no_running_server_is_refused_with_what_to_set(monkeypatch, tmp_path, capsys):
    """No server and an empty data dir: exit 2, a message naming the settings; no token
    printed and no new Redis started."""
    monkeypatch.delenv("TASKRANK_REDIS_URL", raising=False)
    monkeypatch.setenv("TASKRANK_DATA_DIR", str(tmp_path / "var"))
    assert main(["create", "--role", "platform"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "TASKRANK_DATA_DIR" in captured.err and "TASKRANK_REDIS_URL" in captured.err
    assert not (tmp_path / "var" / "appendonlydir").exists()
