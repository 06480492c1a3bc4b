import argparse

import pytest

from pipeline import cli


def _module(tmp_path, monkeypatch):
    """A throw-away command module registered through the real registry."""
    (tmp_path / "fake_cmd.py").write_text(
        "from pipeline.cli import UserError\n"
        "def register(sub):\n"
        "    p = sub.add_parser('hello', help='say hello')\n"
        "    p.add_argument('--fail', action='store_true')\n"
        "    p.set_defaults(func=run)\n"
        "def run(args):\n"
        "    if args.fail:\n"
        "        raise UserError('the answer is no')\n"
        "    print('workspace=' + str(args.workspace))\n"
        "    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["fake_cmd"]


def test_workspace_option_before_or_after_command(tmp_path, monkeypatch, capsys):
    modules = _module(tmp_path, monkeypatch)
    assert cli.main("t", "d", modules, ["--workspace", "A", "hello"]) == 0
    assert cli.main("t", "d", modules, ["hello", "--workspace", "B"]) == 0
    assert capsys.readouterr().out.splitlines() == ["workspace=A", "workspace=B"]


def test_user_error_is_one_sentence_and_exit_2(tmp_path, monkeypatch, capsys):
    modules = _module(tmp_path, monkeypatch)
    assert cli.main("t", "d", modules, ["hello", "--fail"]) == 2
    assert capsys.readouterr().err == "error: the answer is no\n"


def test_no_command_prints_help(tmp_path, monkeypatch, capsys):
    modules = _module(tmp_path, monkeypatch)
    assert cli.main("t", "d", modules, []) == 2
    assert "say hello" in capsys.readouterr().out
