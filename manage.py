"""Commands for operators, run beside the service: `python -m manage COMMAND`.

    python -m manage create-admin alice   # create alice as an admin, or make her one
    python -m manage remove-admin alice   # make her a member again

They read the same settings as the service (DATA_DIR, DATABASE_URL, ...), so
they work on its database while it runs, and inside its container:
`docker exec -it CONTAINER python -m manage create-admin alice`.

A password is asked for at a terminal (twice, unseen), and read from the
first line of standard input otherwise, so a script can pipe it in:
`printf '%s\\n' "$PASSWORD" | python -m manage create-admin alice`.
Exit status: 0 done, 1 the database failed, 2 bad input.
"""

import argparse
import getpass
import logging
import sys

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import OperationalError

import crud
import db
from auth import hash_password
from config import settings
from models import Role, UserCreate, Username

logger = logging.getLogger("messageapp.manage")


class CommandError(Exception):
    """Bad input: the message is printed and the command exits with 2."""


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


COMMANDS = {"create-admin": create_admin, "remove-admin": remove_admin}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m manage", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.__doc__).add_argument("username")
    args = parser.parse_args(argv)
    try:
        print(COMMANDS[args.command](args.username))  # noqa: T201 (a command's output)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except OperationalError as error:
        print(f"error: the database failed: {error.orig}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
