"""``dfml serve``'s command line: a bad address is one line and exit 2, before any training."""

from __future__ import annotations

import socket

import pytest

from dfml.launch.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "abc"], "--port 'abc' is not a TCP port; give a whole number in 1-65535"),
        (["--port", "0"], "--port '0' is not a TCP port"),
        (["--port", "65536"], "--port '65536' is not a TCP port"),
        (["--port", "80.5"], "--port '80.5' is not a TCP port"),
        (["--host", "my host"], "--host 'my host' is not an IP address; give one of this"),
        (["--host", "256.1.1.1"], "--host '256.1.1.1' is not an IP address"),
        (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:"),
    ],
)
def test_a_bad_address_is_one_line(capsys, argv, message):
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_port_in_use_is_refused_before_training(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--clients", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"dfml: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "give a free --port or another --host"
    )


def test_run_options_are_checked_as_dfml_run_checks_them(capsys, tmp_path):
    assert main(["serve", "--port", "18765", "--clients", "1", "--out", str(tmp_path)]) == 2
    assert "clients must be >= 2" in capsys.readouterr().err


def test_help_names_the_address_flags_and_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--host HOST address to listen on; 0.0.0.0 for every interface (default: 127.0.0.1)" in text
    )
    assert "--port PORT TCP port, 1-65535 (default: 8000)" in text
    assert "--resume V" in text and "--finetune-rounds V" in text
