"""Connecting to a cluster started with ``ray start`` (Ray 2.59+ turns token authentication on
and writes ~/.ray/auth_token): the driver must send the token, or ray.init fails after half a
minute saying only "Failed to connect" (seen with `ray start --head` and --ray-address)."""

from __future__ import annotations

from llmopt.jobs.executors import use_token_auth


def test_a_token_file_switches_token_mode_on(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    env: dict = {}
    assert use_token_auth(env, home=tmp_path) and env["RAY_AUTH_MODE"] == "token"


def test_a_token_in_the_environment_switches_token_mode_on(tmp_path):
    env = {"RAY_AUTH_TOKEN": "secret"}
    assert use_token_auth(env, home=tmp_path) and env["RAY_AUTH_MODE"] == "token"


def test_no_token_or_an_explicit_mode_is_left_alone(tmp_path):
    env: dict = {}
    assert not use_token_auth(env, home=tmp_path) and "RAY_AUTH_MODE" not in env
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    env = {"RAY_AUTH_MODE": "disabled"}
    assert not use_token_auth(env, home=tmp_path) and env["RAY_AUTH_MODE"] == "disabled"
