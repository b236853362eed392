"""Settings, read once from environment variables when the app starts."""

import base64
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Keys that appear in tutorials and .env examples; accepting one would let
# anybody who read the same tutorial forge tokens.
PLACEHOLDER_KEYS = {"changethis", "changeme", "secret", "secret-key", "your-secret-key"}
MIN_SECRET_KEY_LENGTH = 32
SECRET_KEY_FILE = "secret_key"
VAPID_KEY_FILE = "vapid_private_key.pem"


class Settings(BaseSettings):
    """Every field is read from the environment variable of the same name."""

    # A rejected setting must not be echoed into logs: it may be a real key.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    DATA_DIR: Path = Path("data")
    DATABASE_URL: str = ""  # empty: SQLite file in DATA_DIR
    SECRET_KEY: str = ""  # empty: generated once into DATA_DIR/secret_key
    # Short: a stolen access token is good for minutes; the client refreshes.
    ACCESS_TOKEN_EXPIRE_MINUTES: float = Field(default=15, gt=0)
    # A session's refresh token stops working after this many days unused,
    # and this many days after the login, whichever comes first.
    REFRESH_TOKEN_IDLE_DAYS: float = Field(default=14, gt=0)
    REFRESH_TOKEN_LIFETIME_DAYS: float = Field(default=30, gt=0)
    CORS_ORIGINS: Annotated[list[str], NoDecode] = []
    ADMIN_USERNAMES: Annotated[list[str], NoDecode] = []

    # Failed-login limiting: this many failures for one username within the
    # window answer 429 until the oldest of them leaves the window.
    LOGIN_MAX_FAILURES: int = Field(default=10, ge=1)
    LOGIN_FAILURE_WINDOW_SECONDS: int = Field(default=300, ge=1)
    # The same for one client address, whatever usernames it tries: a
    # password-spraying client is stopped too (a NAT or office shares one).
    LOGIN_MAX_FAILURES_PER_IP: int = Field(default=100, ge=1)
    # Sign-ups from one client address within the window; more answer 429.
    SIGNUP_MAX_PER_IP: int = Field(default=20, ge=1)
    SIGNUP_WINDOW_SECONDS: int = Field(default=3600, ge=1)
    # Per-user limits: messages sent over all conversations in a rolling
    # minute (more answer 429), and open sockets per worker process (the
    # socket over the limit is closed with 1008).
    SEND_MAX_PER_MINUTE: int = Field(default=120, ge=1)
    WS_MAX_PER_USER: int = Field(default=20, ge=1)
    # How many argon2 hashes one worker process runs at once (19 MiB each).
    HASH_CONCURRENCY: int = Field(default=2, ge=1)
    MAX_BODY_BYTES: int = Field(default=64 * 1024, ge=1)
    # Attachments (attachments.py): the largest file one upload may carry
    # (every other route keeps MAX_BODY_BYTES), what one user's uploads may
    # take on disk altogether, and the most pixels an image may decode to
    # (a few kilobytes can claim gigapixels: a decompression bomb).
    ATTACHMENT_MAX_BYTES: int = Field(default=10 * 1024 * 1024, ge=1)
    ATTACHMENT_QUOTA_BYTES: int = Field(default=1024 * 1024 * 1024, ge=1)
    ATTACHMENT_MAX_PIXELS: int = Field(default=50_000_000, ge=1)
    # How long a signed attachment URL in message JSON works, and how long an
    # upload nobody sent is kept.
    ATTACHMENT_URL_SECONDS: int = Field(default=3600, ge=60)
    ATTACHMENT_UNSENT_HOURS: float = Field(default=24, gt=0)
    # A client gets this long to send a request's line and headers, and at
    # most this long between two pieces of its body; then it is cut off.
    REQUEST_HEAD_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    REQUEST_BODY_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    SQLITE_BUSY_TIMEOUT_SECONDS: float = Field(default=5.0, ge=0)
    # Empty: live events reach only this process's sockets (one worker). Set it
    # (redis://host:6379/0) to fan events out to every worker and replica.
    REDIS_URL: str = ""
    # Deployments sharing one Redis need a channel each.
    REDIS_CHANNEL: str = "messageapp:events"
    # Events waiting to be sent on one socket; a client that falls further
    # behind is disconnected and catches up over HTTP when it reconnects.
    WS_SEND_QUEUE: int = Field(default=256, ge=1)
    # Open sockets' objects are frozen, out of the garbage collector's way;
    # at most this long apart (twice, if events never pause), they are
    # unfrozen and collected once, so closed sockets' memory comes back (hub.py).
    WS_GC_SECONDS: float = Field(default=300, gt=0)
    # Fill an empty database with demo users and conversations at start
    # (demo.py); the demo users' password is printed in the log.
    DEMO_DATA: bool = False
    # Empty: no metrics are kept and GET /metrics is 404. Set it to a long
    # random string to measure, and to let a scraper that sends it as a
    # bearer token read them (metrics.py).
    METRICS_TOKEN: str = ""
    # Web Push (push.py). The VAPID key signs every push, so push services
    # know them to be ours (RFC 8292); browsers subscribe with its public half,
    # so a new key silently orphans every subscription. Empty: a P-256 key
    # generated once into DATA_DIR/vapid_private_key.pem; else a PEM key, or
    # the 32-byte private number in base64url (what `web-push` generates).
    VAPID_PRIVATE_KEY: str = ""
    # The `sub` claim: how a push service's operator can reach this one's.
    VAPID_SUBJECT: str = "mailto:admin@localhost"
    # Let subscriptions point at http(s)://localhost: a push service run by
    # the tests, or in development. Off: only public https hosts (no SSRF).
    PUSH_ALLOW_LOCALHOST: bool = False
    # How long one push's POST may take in all: connecting to the push
    # service, sending, and its whole answer.
    PUSH_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    # `text`: a line a person reads; `json`: one JSON object per line, for a
    # log collector (logs.py).
    LOG_FORMAT: Literal["text", "json"] = "text"

    @field_validator("CORS_ORIGINS", "ADMIN_USERNAMES", mode="before")
    @classmethod
    def split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def resolve_defaults(self) -> "Settings":
        make_private_dir(self.DATA_DIR)
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.DATA_DIR / 'messageapp.db'}"
        if self.SECRET_KEY:
            check_secret_key(self.SECRET_KEY, "SECRET_KEY")
        else:
            path = self.DATA_DIR / SECRET_KEY_FILE
            self.SECRET_KEY = check_secret_key(load_or_create_secret_key(path), str(path))
        if self.VAPID_PRIVATE_KEY:
            vapid_private_key(self.VAPID_PRIVATE_KEY, "VAPID_PRIVATE_KEY")  # fit, or refused now
        else:
            path = self.DATA_DIR / VAPID_KEY_FILE
            self.VAPID_PRIVATE_KEY = load_or_create_file(path, new_vapid_key)
            vapid_private_key(self.VAPID_PRIVATE_KEY, str(path))
        return self

    @property
    def admin_usernames(self) -> set[str]:
        return {name.lower() for name in self.ADMIN_USERNAMES}


def check_secret_key(key: str, source: str) -> str:
    """The key, if it is fit to sign tokens: wherever it comes from, an empty
    (a `touch`ed file, an empty mounted secret), short or tutorial key would
    let anybody forge them."""
    if len(key.strip()) < MIN_SECRET_KEY_LENGTH or key.lower() in PLACEHOLDER_KEYS:
        raise ValueError(
            f"{source}: the key must be at least {MIN_SECRET_KEY_LENGTH} random characters. "
            "Unset SECRET_KEY and delete the key file to have one generated (every "
            "token issued so far then stops working), or put a real key there"
        )
    return key


def make_private_dir(path: Path) -> None:
    """DATA_DIR, private to the service's user (700): the database, its key
    and what users upload are nobody else's to read on this machine."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        path.chmod(0o700)  # made earlier with the usual umask (755)
    except PermissionError:  # someone else's folder, lent to us: say so, go on
        logging.getLogger("messageapp").warning("Cannot make %s private (chmod 700)", path)


def load_or_create_secret_key(path: Path) -> str:
    """Read the key file, or create it (mode 600) if this is the first start."""
    return load_or_create_file(path, lambda: secrets.token_urlsafe(48))


def load_or_create_file(path: Path, make: Callable[[], str]) -> str:
    """Read a private file, or create it (mode 600) with what `make` returns."""
    if path.exists():
        return path.read_text().strip()
    # Write a private temporary file, then link it into place: link fails if
    # another worker process won the race, and nobody ever reads a half-written key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def new_vapid_key() -> str:
    """A new P-256 private key, as PEM (what `openssl ecparam` writes too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


def vapid_private_key(text: str, source: str) -> ec.EllipticCurvePrivateKey:
    """The VAPID key in `text` (PEM, or the private number in base64url), if
    it is a P-256 key; VAPID (RFC 8292) signs with ES256, nothing else."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if len(raw) != 32:
                raise ValueError("not 32 bytes")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise ValueError(f"{source}: not a PEM or base64url private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{source}: a VAPID key must be an EC key on P-256 (secp256r1)")
    return key


settings = Settings()
