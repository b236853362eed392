"""Commands for operators, run beside the service: `python -m manage COMMAND`.

    python -m manage create-admin alice   # create alice as an admin, or make her one
    python -m manage remove-admin alice   # make her a member again
    python -m manage backup PATH          # copy the database, key and attachments to a new folder
    python -m manage restore PATH         # put such a copy back (the service stopped)

They read the same settings as the service (DATA_DIR, DATABASE_URL, ...), so
they work on its database while it runs (all but restore), and inside its
container: `docker exec -it CONTAINER python -m manage create-admin alice`.

A password is asked for at a terminal (twice, unseen), and read from the
first line of standard input otherwise, so a script can pipe it in:
`printf '%s\\n' "$PASSWORD" | python -m manage create-admin alice`.
Exit status: 0 done; 1 it failed (the database, a file, an integrity
check); 2 refused: bad input, or not now (restore while the service runs,
backup or restore on PostgreSQL, which has its own tools).
"""

import argparse
import getpass
import logging
import os
import shutil
import sqlite3
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError

import attachments
import crud
import db
from auth import hash_password
from config import SECRET_KEY_FILE, VAPID_KEY_FILE, settings
from models import Role, UserCreate, Username

logger = logging.getLogger("messageapp.manage")


class CommandError(Exception):
    """Refused (bad input, or not now): the message is printed, exit status 2."""


class CommandFailed(Exception):
    """It went wrong midway: the message is printed, exit status 1."""


def read_password(username: str) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {username}: ")
        if getpass.getpass("The same again: ") != password:
            raise CommandError("The two passwords differ")
        return password
    # Only the line break goes: spaces may be part of a passphrase.
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def first_error(error: ValidationError) -> str:
    problem = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]


def create_admin(username: str) -> str:
    """Make `username` an active admin, creating the account if there is none."""
    try:
        TypeAdapter(Username).validate_python(username)
    except ValidationError as error:
        raise CommandError(f"Invalid username {username!r}: {first_error(error)}") from None
    db.init_db(db.engine)  # a new deployment may have no tables yet
    with db.read_session() as session:
        user = crud.get_user_by_username(session, username)
    if user is None:
        password = read_password(username)
        try:
            user_in = UserCreate(username=username, password=password)
        except ValidationError as error:
            raise CommandError(f"Invalid password: {first_error(error)}") from None
        hashed_password = hash_password(password)  # before the write: no lock held meanwhile
        with db.write_session() as session:
            user = crud.create_user(session, user_in, hashed_password)
            if user is None:
                raise CommandError(f"{username} was taken a moment ago; run this again")
            crud.set_role(session, user, Role.admin)
        return f"Created {user.username}, an admin. Log in at /docs or / with that password."
    with db.write_session() as session:
        crud.set_role(session, user, Role.admin)
    # Scopes are granted at login: a token from before has no `admin` scope.
    return f"{user.username} is now an active admin; they log in again to use the admin routes."


def remove_admin(username: str) -> str:
    """Make `username` a member again."""
    with db.write_session() as session:
        user = crud.get_user_by_username(session, username)
        if user is None:
            raise CommandError(f"No user named {username!r}")
        crud.set_role(session, user, Role.member)
    if username.lower() in settings.admin_usernames:
        logger.warning("%s is in ADMIN_USERNAMES: an admin again at the next start", username)
    return f"{user.username} is a member now; their tokens lost the admin scope."


# --- Backup and restore (SQLite) ---------------------------------------------

BACKUP_DATABASE = "messageapp.db"  # the database's name inside a backup folder
BACKUP_ATTACHMENTS = "attachments"  # the uploaded files' folder inside one
# What DATA_DIR holds besides the database that a restored service needs:
# without the key that signed them, every token in use is refused; without
# the VAPID key, every browser's push subscription is (push services check it).
KEY_FILES = (SECRET_KEY_FILE, VAPID_KEY_FILE)


def backup(path: str) -> str:
    """Copy the database, its key file and the attachments into PATH, a new
    folder, while the service runs."""
    database = sqlite_database("backup")
    target = Path(path)
    if target.exists():
        raise CommandError(f"{target} exists already: name a new folder")
    if not target.parent.is_dir():
        raise CommandError(f"No folder {target.parent} to make {target.name} in")
    if not database.is_file():
        raise CommandError(f"No database at {database} to back up")
    # Made under another name, renamed when complete: a folder called PATH
    # is always a whole backup, never half of one.
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.mkdir(mode=0o700)  # private, as DATA_DIR is
    try:
        with db.in_use(db.engine):  # no restore can start meanwhile
            # Files before and after the database (a file never changes once
            # written): every attachment the copy names has its file.
            files = copy_attachments(attachments.root(), partial / BACKUP_ATTACHMENTS)
            copy_database(database, partial / BACKUP_DATABASE)
            files += copy_attachments(attachments.root(), partial / BACKUP_ATTACHMENTS)
        keys = copy_files(KEY_FILES, settings.DATA_DIR, partial)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    done = (
        f"Backed up {database}, {', '.join(keys) or 'no key file'} and {files} attachment "
        f"files into {target}."
    )
    for name in ("SECRET_KEY", "VAPID_PRIVATE_KEY"):
        if os.environ.get(name):
            done += f" {name} comes from the environment: keep it with the backup yourself."
    return f"{done} Restore it with the service stopped: python -m manage restore {target}"


def restore(path: str) -> str:
    """Put the backup in folder PATH back (database, key file, attachments); the service stopped."""
    database = sqlite_database("restore")
    source = Path(path) / BACKUP_DATABASE
    if not source.is_file():
        raise CommandError(f"{path} holds no {BACKUP_DATABASE}: not a folder `backup` made")
    checked = integrity(source)  # before anything is touched
    if checked != "ok":
        raise CommandError(f"The backup is damaged (integrity check: {checked}); nothing changed")
    with db.alone(db.engine) as alone:
        if not alone:
            raise CommandError(
                f"The service is running on {database} (or another command is using it): "
                "stop it, every worker, and run restore again"
            )
        kept = set_aside(database)
        copy_database(source, database)
        keys = copy_files(KEY_FILES, Path(path), settings.DATA_DIR)
        files = restore_attachments(Path(path) / BACKUP_ATTACHMENTS)
        checked = integrity(database)
    if checked != "ok":
        raise CommandFailed(f"The restored database fails its integrity check: {checked}")
    done = f"Restored {database}, {', '.join(keys) or 'no key file'} and {files} from {path}"
    if kept is not None:
        done += f"; the database it replaced is kept as {kept} (delete it when you are sure)"
    return f"{done}. Integrity check: ok. Start the service."


def sqlite_database(command: str) -> Path:
    """The SQLite file to back up or restore; on PostgreSQL, the recipe instead."""
    database = db.sqlite_file(db.engine)
    if database is not None:
        return database
    # pg_dump takes the URL without SQLAlchemy's driver name; shown without the password.
    url = make_url(settings.DATABASE_URL).set(drivername="postgresql")
    shown = url.render_as_string(hide_password=True)
    if command == "backup":
        recipe = f"pg_dump --format=custom --file=messageapp.dump '{shown}'"
    else:
        recipe = f"pg_restore --clean --if-exists --no-owner --dbname='{shown}' messageapp.dump"
    raise CommandError(
        f"On PostgreSQL, {command} with its own tools: {recipe} "
        "(docs/deploy.md, 'Backup and restore', has the whole recipe)"
    )


def copy_database(source: Path, copy: Path) -> None:
    """A consistent copy of `source`, even while the service writes to it.

    SQLite's backup API copies every page in one step, inside one read
    transaction: a snapshot of the moment it began, which in WAL mode the
    writers do not wait for. The copy is one self-contained file (no -wal
    beside it), readable by the service's user only.
    """
    # Made empty and private first; a valid empty database for SQLite. Made
    # under a temporary name: `copy` changes in one rename, never in parts.
    partial = copy.with_name(f".{copy.name}.partial-{os.getpid()}")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(partial)) as out:
        live.backup(out)
        out.execute("PRAGMA journal_mode=DELETE")
    os.replace(partial, copy)


def integrity(database: Path) -> str:
    """SQLite's integrity check of a file that no one writes to: 'ok', or the first problem."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def set_aside(database: Path) -> Path | None:
    """Rename the database about to be replaced, with its WAL (which may hold
    its latest writes), so that a restore made by mistake loses nothing."""
    if not database.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = database.with_name(f"{database.name}.before-restore-{stamp}")
    os.rename(database, kept)
    wal = database.with_name(f"{database.name}-wal")
    if wal.exists():
        os.rename(wal, kept.with_name(f"{kept.name}-wal"))  # SQLite pairs them by name
    # The shared-memory index of the old WAL, stale now; SQLite rebuilds it.
    database.with_name(f"{database.name}-shm").unlink(missing_ok=True)
    return kept


def copy_files(names: tuple[str, ...], source: Path, target: Path) -> list[str]:
    """Copy those of `names` that exist in `source` into `target`, private (600);
    each appears whole or not at all."""
    copied = []
    for name in names:
        if (source / name).is_file():
            partial = target / f".{name}.partial-{os.getpid()}"
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            shutil.copyfile(source / name, partial)
            os.replace(partial, target / name)
            copied.append(name)
    return copied


def copy_attachments(source: Path, target: Path) -> int:
    """Copy the attachment files of `source` that `target` lacks (never the
    uploads still arriving, in tmp/), private; each whole or not at all.
    How many were copied."""
    copied = 0
    if not source.is_dir():
        return 0
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name != "tmp"):
        (target / folder.name).mkdir(mode=0o700, parents=True, exist_ok=True)
        for file in folder.iterdir():
            if file.is_file() and not (target / folder.name / file.name).exists():
                try:
                    copied += len(copy_files((file.name,), folder, target / folder.name))
                except FileNotFoundError:
                    pass  # deleted meanwhile, with its row
    return copied


def restore_attachments(source: Path) -> str:
    """Put the backup's attachments in place; the folder they replace is kept aside."""
    if not source.is_dir():
        return "no attachments (the backup has none; those in place stay)"
    current = attachments.root()
    if current.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        current.rename(current.with_name(f"{current.name}.before-restore-{stamp}"))
    partial = current.with_name(f".{current.name}.partial-{os.getpid()}")
    partial.mkdir(mode=0o700)
    copied = copy_attachments(source, partial)
    partial.rename(current)
    return f"{copied} attachment files"


COMMANDS = {
    "create-admin": (create_admin, "username"),
    "remove-admin": (remove_admin, "username"),
    "backup": (backup, "path"),
    "restore": (restore, "path"),
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m manage", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (command, argument) in COMMANDS.items():
        commands.add_parser(name, help=command.__doc__).add_argument(argument)
    args = parser.parse_args(argv)
    command, argument = COMMANDS[args.command]
    try:
        print(command(getattr(args, argument)))  # noqa: T201 (a command's output)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except OperationalError as error:
        print(f"error: the database failed: {error.orig}", file=sys.stderr)  # noqa: T201
        return 1
    except (CommandFailed, sqlite3.Error, OSError) as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
