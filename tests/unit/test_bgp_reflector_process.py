"""The API process and its edges, without ExaBGP: lines in and commands out through real pipes
(reader and writer threads), bad input and internal errors counted and survived, a broken output
pipe ending the process, the respawn reset, the metrics endpoint, the CLI and the launcher's
files, and ExaBGP's hooks installing on the pinned version (in a subprocess)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bgp.reflector.core.config import EXAMPLE, load_config
from bgp.reflector.core.events import Event, Update
from bgp.reflector.core.prefix import from_text
from bgp.reflector.core.rib import Reflector
from bgp.reflector.core.route import Attrs
from bgp.reflector.core.wire import UpdateDecoder, UpdateEncoder
from bgp.reflector.launcher import exabgp_command, prepare
from bgp.reflector.metrics import ReflectorCollector, endpoints
from bgp.reflector.process import CONFIG_ENV, MARKER, STATE_ENV, ApiProcess
from labs.runid import free_port
from netkit.base.addr import HostPort
from netkit.base.serving import check_bindable
from netkit.cli import reflector as cli

CONFIG = """
router_id: 198.18.0.100
asn: 64512
neighbors:
  - {name: a, address: 198.18.0.1, asn: 64512}
  - {name: b, address: 198.18.0.2, asn: 64512}
"""


def line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def state(peer: str, st: str) -> bytes:
    return line({"type": "state", "neighbor": {"address": {"peer": peer}, "state": st}})


def packet(peer: str, kind: str, msg: bytes) -> bytes:
    return line(
        {
            "type": kind,
            "neighbor": {
                "address": {"peer": peer},
                "direction": "receive",
                "message": {"header": "0x" + msg[:19].hex(), "body": "0x" + msg[19:].hex()},
            },
        }
    )


def open_msg(router_id: str) -> bytes:
    caps = bytes([1, 4, 0, 1, 0, 1, 65, 4]) + (64512).to_bytes(4, "big")
    params = bytes([2, len(caps)]) + caps
    rid = bytes(int(x) for x in router_id.split("."))
    body = (
        bytes([4])
        + (64512).to_bytes(2, "big")
        + (90).to_bytes(2, "big")
        + rid
        + bytes([len(params)])
        + params
    )
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + b"\x01" + body


def app_for(text: str = CONFIG, **kw: Any) -> tuple[ApiProcess, io.BytesIO]:
    out = io.BytesIO()
    return ApiProcess(load_config(text).reflector(), io.BytesIO(), out, **kw), out


def test_lines_in_commands_out_through_pipes() -> None:
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    app = ApiProcess(load_config(CONFIG).reflector(), os.fdopen(r_in, "rb"), os.fdopen(w_out, "wb"))
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(app.run()))
    runner.start()
    feed = os.fdopen(w_in, "wb")
    for peer in ("198.18.0.1", "198.18.0.2"):
        feed.write(packet(peer, "open", open_msg(peer)) + state(peer, "up"))
    prefixes = [from_text(f"198.19.{i // 256}.{i % 256}/32") for i in range(5000)]
    for m in UpdateEncoder().announce(Attrs(next_hop="198.18.0.1", local_pref=100), prefixes):
        feed.write(packet("198.18.0.1", "update", m))
    feed.write(b"done\n")
    feed.flush()
    reader = os.fdopen(r_out, "rb")
    got: list[bytes] = []
    dec = UpdateDecoder()
    deadline = time.monotonic() + 10
    while len(got) < len(prefixes) and time.monotonic() < deadline:
        text = reader.readline().decode()
        head, _, rest = text.partition(" netkit-raw ")
        if head != "neighbor 198.18.0.2":
            continue
        for h in rest.split():
            u = dec.decode(bytes.fromhex(h)[19:])
            for a, ps in u.announced:
                assert (a.originator_id, a.cluster_list) == ("198.18.0.1", ("198.18.0.100",))
                got += ps
    assert sorted(got) == sorted(prefixes)
    feed.close()  # ExaBGP closes the pipe: the process ends
    runner.join(5)
    assert result == [0]
    snap = app.snapshot()
    assert snap["routes"]["ipv4"] == 5000 and snap["commands_written"] > 0
    assert sum(snap["latency_counts"]) == snap["updates_processed"] > 0
    assert app.ready()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"garbage\n", "not_json"),
        (b"\xff\xfe{bad utf8\n", "not_json"),
        (b'{"type": "state"}\n', "unexpected_message"),
        (
            b'{"type": "update", "neighbor": {"address": {"peer": "198.18.0.1"}, '
            b'"message": {"body": "0xZZ"}}}\n',
            "bad_structure",
        ),
    ],
)
def test_bad_lines_are_counted_and_skipped(raw: bytes, reason: str) -> None:
    app, _ = app_for()
    app.handle_line(raw)
    app.handle_line(state("198.18.0.1", "up"))
    assert app.bad_messages == {reason: 1}
    assert app.reflector.peers["198.18.0.1"].established


def test_an_internal_error_is_counted_not_fatal() -> None:
    app, _ = app_for()

    class Broken(Reflector):
        def handle(self, event: Event) -> None:
            raise RuntimeError("bug")

    app.reflector.__class__ = Broken
    app.handle_line(state("198.18.0.1", "up"))
    assert app.bad_messages == {"internal_error": 1}


def test_a_decoder_bug_is_counted_not_fatal() -> None:
    lines = io.BytesIO(state("198.18.0.1", "up") + state("198.18.0.2", "up"))
    app = ApiProcess(load_config(CONFIG).reflector(), lines, io.BytesIO())
    decode = app.codec.decode

    def broken(text: str) -> Event | None:
        if "198.18.0.1" in text:
            raise ZeroDivisionError("bug")
        return decode(text)

    app.codec.decode = broken  # type: ignore[method-assign]
    assert app.run() == 0
    assert app.bad_messages == {"internal_error": 1}
    assert app.reflector.peers["198.18.0.2"].established  # the next line was still read


def test_a_command_that_cannot_be_encoded_does_not_take_its_batch_with_it() -> None:
    app, out = app_for(CONFIG + "  - {name: c, address: 198.18.0.3, asn: 64512}\n")
    for peer in ("198.18.0.1", "198.18.0.2", "198.18.0.3"):
        app.handle_line(state(peer, "up"))
    ok = [from_text(f"198.19.0.{i}/32") for i in range(10)]
    app.reflector.handle(Update("198.18.0.3", ((Attrs(next_hop="198.18.0.3"), tuple(ok)),)))
    # fits in one UPDATE as received, not once ORIGINATOR_ID and CLUSTER_LIST are added
    big = Attrs(next_hop="198.18.0.1", communities=tuple(f"1:{i}" for i in range(1010)))
    app.reflector.handle(Update("198.18.0.1", ((big, (from_text("198.19.9.0/24"),)),)))
    app._drain()
    assert app.bad_messages == {"internal_error": 2}  # to 198.18.0.2 and 198.18.0.3
    dec = UpdateDecoder()
    got: dict[str, list[bytes]] = {}
    for text in out.getvalue().decode().splitlines():
        head, _, rest = text.partition(" netkit-raw ")
        for h in rest.split():
            u = dec.decode(bytes.fromhex(h)[19:])
            got.setdefault(head, []).extend(p for _, ps in u.announced for p in ps)
            got.setdefault(head + " withdraw", []).extend(u.withdrawn)
    assert sorted(got["neighbor 198.18.0.2"]) == sorted(got["neighbor 198.18.0.1"]) == sorted(ok)
    assert got["neighbor 198.18.0.2 withdraw"] == [from_text("198.19.9.0/24")]


def test_many_bad_lines_are_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = app_for()
    for _ in range(2000):
        app.handle_line(b"garbage\n")
    assert app.bad_messages["not_json"] == 2000
    assert len([r for r in caplog.records if r.getMessage() == "ignored a message from ExaBGP"]) == 20 + 2


def test_a_broken_output_pipe_ends_the_process() -> None:
    class Closed(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    lines = io.BytesIO(b"".join(state(p, "up") for p in ("198.18.0.1", "198.18.0.2")) + b"done\n" * 50)
    app = ApiProcess(load_config(CONFIG).reflector(), lines, Closed())
    app.reflector.teardown_all()  # something to write at once
    assert app.run() == 1 and app.write_failed


def test_text_mode_process_writes_text_commands() -> None:
    app, out = app_for(mode="text")
    app.reflector.teardown_all()
    app._drain()
    assert out.getvalue().decode().splitlines() == [
        "neighbor 198.18.0.1 teardown 4",
        "neighbor 198.18.0.2 teardown 4",
    ]


def run_process(
    tmp_path: Path, config: str | None, stdin: bytes = b"", marker: bool = False
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop(CONFIG_ENV, None)
    if config is not None:
        path = tmp_path / "rr.yaml"
        path.write_text(config)
        env[CONFIG_ENV] = str(path)
    env[STATE_ENV] = str(tmp_path)
    if marker:
        (tmp_path / MARKER).write_text("1\n")
    return subprocess.run(
        [sys.executable, "-m", "bgp.reflector.process"],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )


def test_process_main_first_start_and_respawn(tmp_path: Path) -> None:
    first = run_process(tmp_path, CONFIG)
    assert first.returncode == 0 and first.stdout == b""
    assert (tmp_path / MARKER).read_text().strip().isdigit()
    # ExaBGP restarted the API process: every session is reset so peers send their tables again
    again = run_process(tmp_path, CONFIG, marker=True)
    assert again.returncode == 0
    assert again.stdout.decode().splitlines() == [
        "neighbor 198.18.0.1 teardown 4",
        "neighbor 198.18.0.2 teardown 4",
    ]
    assert b"API process restarted by ExaBGP" in again.stderr


def test_process_main_refuses_missing_or_bad_config(tmp_path: Path) -> None:
    none = run_process(tmp_path, None)
    assert none.returncode == 2 and b"no --config" in none.stderr
    bad = run_process(tmp_path, "router_id: 1.2.3.4\n")
    assert bad.returncode == 2 and b"asn: required" in bad.stderr


def test_process_main_exits_when_its_metrics_address_is_taken(tmp_path: Path) -> None:
    """Taken between the launcher's check and the API process (a race): no reflector without
    /health; the process exits (ExaBGP respawns it a few times, then gives up)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_process(tmp_path, CONFIG + f"metrics: 127.0.0.1:{port}\n")
    assert done.returncode == 1 and done.stdout == b""
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use".encode() in done.stderr


def test_reflector_with_its_metrics_address_taken_exits_1_starting_nothing(tmp_path: Path) -> None:
    """It kept running with no /health (and ExaBGP with it); now nothing starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "rr.yaml"
        path.write_text(
            f"router_id: 127.0.0.1\nasn: 64512\nlocal_address: 127.0.0.1\nmetrics: 127.0.0.1:{port}\n"
            "neighbors: [{name: c1, address: 127.0.0.2, asn: 64512, role: client}]\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "bgp.reflector", "--config", str(path), "--state-dir", tmp_path / "s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail("the reflector kept running with its metrics address taken")
    assert proc.returncode == 1 and out == b""
    assert err.decode().splitlines() == [
        f"netkit bgp reflector: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
    assert not (tmp_path / "s" / "exabgp.conf").exists()


# -- metrics -------------------------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    app, _ = app_for()
    app.handle_line(state("198.18.0.1", "up"))
    app.handle_line(b"garbage\n")
    return app.snapshot()


def test_collector_exports_every_metric() -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ReflectorCollector(snapshot))
    text = generate_latest(reg).decode()
    for name in (
        'netkit_bgp_sessions{state="established"} 1.0',
        'netkit_bgp_sessions{state="idle"} 1.0',
        'netkit_bgp_session_established{name="a",peer="198.18.0.1"} 1.0',
        'netkit_bgp_session_transitions_total{direction="up",peer="198.18.0.1"} 1.0',
        'netkit_bgp_prefixes_received{peer="198.18.0.1"} 0.0',
        'netkit_bgp_prefixes_accepted{peer="198.18.0.2"} 0.0',
        'netkit_bgp_prefixes_advertised{peer="198.18.0.1"} 0.0',
        'netkit_bgp_max_prefix_breaches_total{peer="198.18.0.1"} 0.0',
        'netkit_bgp_updates_received_total{peer="198.18.0.1"} 0.0',
        'netkit_bgp_prefixes_sent_total{kind="announce",peer="198.18.0.1"} 0.0',
        'netkit_bgp_routes{family="ipv4"} 0.0',
        "netkit_bgp_updates_processed_total 0.0",
        'netkit_bgp_bad_messages_total{reason="not_json"} 1.0',
        'netkit_bgp_bad_messages_total{reason="unknown_peer"} 0.0',
        "netkit_bgp_speaker_command_errors_total 0.0",
        "netkit_bgp_api_commands_total 0.0",
        'netkit_bgp_update_processing_seconds_bucket{le="+Inf"} 0.0',
    ):
        assert name in text, name


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_server_endpoints_and_bind_failure() -> None:
    port = free_port()
    ready = [False]
    server = endpoints(HostPort("127.0.0.1", port), snapshot, lambda: ready[0])
    server.start_in_thread()
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/metrics")[0] == 200 and "netkit_bgp_sessions" in get(base + "/metrics")[1]
        assert get(base + "/health") == (200, "OK\n")
        assert get(base + "/healthz") == (200, "OK\n")
        assert get(base + "/ready") == get(base + "/readyz") == (503, "no session established\n")
        ready[0] = True
        assert get(base + "/ready") == (200, "OK\n")
        status = json.loads(get(base + "/status")[1])
        assert status["router_id"] == "198.18.0.100" and len(status["peers"]) == 2
        assert get(base + "/nope")[0] == 404
        # a second server on the same port cannot bind, and says where; the launcher's probe too
        taken = f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
        with pytest.raises(OSError, match=taken):
            endpoints(HostPort("127.0.0.1", port), snapshot, lambda: True).start_in_thread()
        with pytest.raises(OSError, match=taken):
            check_bindable(HostPort("127.0.0.1", port))
    finally:
        server.stop_thread()


def test_metrics_server_survives_a_failing_snapshot() -> None:
    port = free_port()

    def broken() -> dict[str, Any]:
        raise RuntimeError("bug")

    server = endpoints(HostPort("127.0.0.1", port), broken, lambda: True)
    server.start_in_thread()
    try:
        assert get(f"http://127.0.0.1:{port}/status")[0] == 500
        assert get(f"http://127.0.0.1:{port}/health")[0] == 200
    finally:
        server.stop_thread()


# -- CLI and launcher --------------------------------------------------------------------------------


def test_cli_help_teaches_and_check_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = capsys.readouterr().out
    assert "RFC 4456" in help_text and "neighbors:" in help_text and "max_prefix" in help_text
    path = tmp_path / "rr.yaml"
    path.write_text(EXAMPLE)
    assert cli.main(["--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "neighbor 198.18.0.1 {" in out and "# env exabgp.tcp.bind=198.18.0.2" in out


def test_cli_reports_bad_config_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text("router_id: 1.2.3.4\nasn: 1\nneighbors: [{address: x, asn: 1}]\n")
    assert cli.main(["--config", str(path)]) == 2
    assert "neighbors[0].address: 'x' is not an IP address" in capsys.readouterr().err
    assert cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_add_parser_registers_the_subcommand() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(["reflector", "--config", "x.yaml", "--check"])
    assert args.func is cli.run and args.file == "x.yaml" and args.check
    assert parser.parse_args(["reflector", "-f", "x.yaml"]).file == "x.yaml"


def test_launcher_writes_exabgp_conf_and_environment(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    conf, env = prepare(cfg, EXAMPLE, tmp_path)
    assert conf.read_text().startswith("# netkit bgp reflector")
    # the API process reads the configuration ExaBGP was started with, whatever becomes of the file
    assert env[CONFIG_ENV] == str((tmp_path / "reflector.yaml").resolve()) and env[STATE_ENV] == str(tmp_path)
    assert (tmp_path / "reflector.yaml").read_text() == EXAMPLE
    assert env["exabgp.api.cli"] == "false"
    assert "exabgp.tcp.bind=198.18.0.2" in (tmp_path / "environment").read_text()
    assert exabgp_command(cfg, conf)[-2:] == ["--wire", str(conf)]
    text = load_config(EXAMPLE.replace("timers:", "exabgp: {api: text}\ntimers:"))
    assert exabgp_command(text, conf)[-2:] == ["--tuned", str(conf)]


# -- ExaBGP hooks ----------------------------------------------------------------------------------

HOOKS = """
import json
from bgp.reflector import exabgp_main
wire = exabgp_main.apply_wire_hooks()
again = exabgp_main.apply_wire_hooks()
tuned = exabgp_main.apply_tuning()
from exabgp.reactor.api.command.command import Command
from exabgp.reactor.asynchronous import ASYNC
from exabgp.reactor.api.response import json as rjson
print(json.dumps({"wire": wire, "again": again, "tuned": tuned, "limit": ASYNC.LIMIT,
                  "commands": [c for c in Command.functions if c.startswith("netkit")],
                  "hex": rjson.hexstring(bytes([1, 171]))}))
"""


def test_exabgp_hooks_install_on_the_pinned_version() -> None:
    r = subprocess.run([sys.executable, "-c", HOOKS], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["wire"] == ["packets as bytes.hex", "no UPDATE parsing", "netkit-raw", "netkit-notify"]
    assert out["again"] == [] and out["limit"] == 5000 and len(out["tuned"]) == 2
    assert sorted(out["commands"]) == ["netkit-notify", "netkit-raw"] and out["hex"] == "0x01AB"


def test_exabgp_hooks_refuse_another_version() -> None:
    code = (
        "import exabgp.version as v; v.version = '5.0.0'\n"
        "from bgp.reflector import exabgp_main\nexabgp_main.apply_wire_hooks()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "ExaBGP 5.0.0 is installed" in r.stderr


def test_free_port_helper_is_usable() -> None:  # the metrics tests rely on binding what it returns
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
