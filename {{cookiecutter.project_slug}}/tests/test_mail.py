"""The SMTP exchange: a whole attempt within EMAIL_TIMEOUT, and errors with a public summary.

A server of the test's own drips its replies a byte every half second, well within each read's
SMTP_TIMEOUT: only the exchange's deadline can end an attempt.
"""

import queue
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from {{ cookiecutter.package_name }} import mail
from {{ cookiecutter.package_name }}.deadlines import Deadline

from tests.conftest import Api, Mailbox, full_error
from tests.receiver import configure, drip, reload_settings


class DrippingServer(socketserver.ThreadingTCPServer):
    """An SMTP server that answers normally until `drip_after`, then sends the next reply a byte
    every half second for ever; `held` has how long each dripped reply went on, put there once
    the server's thread has seen the client hang up, which may be after the job is recorded."""

    daemon_threads = True

    def __init__(self, drip_after: bytes) -> None:
        self.drip_after = drip_after
        self.held: queue.Queue[float] = queue.Queue()
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)

    def drip(self, connection: socket.socket, code: bytes) -> None:
        self.held.put(drip(connection, code + b" ", self.stopping))


class Handler(socketserver.StreamRequestHandler):
    server: DrippingServer

    def handle(self) -> None:
        if self.server.drip_after == b"":
            self.server.drip(self.connection, b"220")  # the greeting
            return
        self.wfile.write(b"220 drip.test ESMTP\r\n")
        for line in self.rfile:
            command = line.strip().upper()
            if command.startswith(self.server.drip_after):
                self.server.drip(self.connection, b"250")
                return
            if command == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                while self.rfile.readline() not in {b".\r\n", b""}:
                    pass
                if self.server.drip_after == b".":
                    self.server.drip(self.connection, b"250")
                    return
            self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def dripping(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DrippingServer]:
    """Mail goes to a dripping server for the test: an attempt has a second, each read two, and a
    job one attempt (the timeout is transient: it is retried while attempts remain)."""
    server = DrippingServer(request.param)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    configure(
        monkeypatch,
        SMTP_PORT=str(server.server_address[1]),
        EMAIL_TIMEOUT="1",
        SMTP_TIMEOUT="2",
        JOB_MAX_ATTEMPTS="1",
    )
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    monkeypatch.undo()
    reload_settings()


# Where the drip starts: the greeting, the reply to MAIL FROM, the reply to the message's end.
@pytest.mark.parametrize(
    "dripping", [b"", b"MAIL", b"."], indirect=True, ids=["greeting", "MAIL", "data"]
)
def test_a_server_that_drips_its_replies_is_cut_off_at_email_timeout(
    api: Api, dripping: DrippingServer
) -> None:
    address = f"drip-{uuid.uuid4().hex[:8]}@example.com"
    status, body = api.post_json("/signups", {"email": address, "name": "Ada"})
    assert status == 202, body

    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "failed", job
    error = full_error(job["id"])
    assert error.startswith("gave up after 1 attempts: "), error  # transient
    assert "took longer than EMAIL_TIMEOUT (1 s)" in error
    held = dripping.held.get(timeout=10)
    assert dripping.held.empty(), "more than one reply was dripped"
    # The deadline counts from connecting, a moment before the reply started to drip.
    assert 0.8 <= held < 1.5, f"the dripped reply went on for {held:.2f} s"


def test_names_in_any_script_arrive_as_written(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MAIL_FROM='"Café Crème, l\'équipe" <bonjour@example.com>')
    name = "Zoë 日本 <Ada> " + "José " * 20  # long enough to be folded and wrapped
    address = f"names-{uuid.uuid4().hex[:8]}@example.com"
    try:
        mail.send(mail.render_welcome(name, address, "<names@example.com>"))
    finally:
        monkeypatch.undo()
        reload_settings()

    (message,) = mailbox.to(address)
    assert " ".join(name.split()) in " ".join(message["Subject"].split())
    (sender,) = message["From"].addresses
    assert sender.display_name == "Café Crème, l'équipe"
    assert sender.addr_spec == "bonjour@example.com"
    assert message["Message-ID"] == "<names@example.com>"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert f"Hello {name}," in text.get_content()
    assert "Zoë 日本 &lt;Ada&gt;" in html.get_content()


def test_errors_summarise_the_server_reply_apart_from_its_detail(mailbox: Mailbox) -> None:
    message = mail.render_welcome("Ada", "summary@example.com", "<summary@example.com>")
    mailbox.refuse_next, mailbox.refusal = 1, "451 4.3.0 Greylisted, try again in 5 minutes"

    with pytest.raises(mail.TransientMailError) as refused:
        mail.send(message)

    assert refused.value.summary == "the mail server answered 451"
    assert str(refused.value) == refused.value.detail
    assert "Greylisted, try again in 5 minutes" in refused.value.detail


def test_one_timer_ends_each_exchange_on_time_and_spares_those_that_ended() -> None:
    """A short deadline set while a long one waits still ends its exchange on time; one whose
    exchange ended in time shuts nothing down."""
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        with Deadline(30) as long, Deadline(0.2) as short:
            with Deadline(0.1) as ended:
                ended.watch(pairs[2][0])
            long.watch(pairs[0][0])
            short.watch(pairs[1][0])
            started = time.monotonic()
            assert pairs[1][0].recv(1) == b""  # shut down while blocked: the read returns
            assert 0.05 < time.monotonic() - started < 2
            time.sleep(0.2)
            assert short.expired
            assert not long.expired
            assert not ended.expired
            pairs[2][1].sendall(b"x")
            assert pairs[2][0].recv(1) == b"x"  # still open
    finally:
        for pair in pairs:
            for end in pair:
                end.close()
