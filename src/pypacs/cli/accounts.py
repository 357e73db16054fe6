"""``pypacs user`` and ``pypacs token``: the HTTP port's users and their API tokens
(``[auth] mode = "local"``), kept in the archive's index.

Each change (a user added, removed or given a new password; a token created or revoked)
is recorded in the audit trail of ``[audit]``, the server's own (PS3.15 A.5.3.11 Security
Alert, User Security Attributes Changed), by the user running the command on this host.

Exit status: 0 done; 2 a wrong argument (unknown role, user or token, an existing user, a
refused password or name) or no archive where the settings point.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Callable

from pypacs.archive import Archive
from pypacs.archive.accounts import MIN_PASSWORD_LENGTH, AccountError
from pypacs.audit import Auditor, Who, open_auditor
from pypacs.cli.flags import Subparsers, add_setting_flags
from pypacs.config import Settings
from pypacs.model.access import Role

_SECTIONS = ("storage", "storage.s3", "database", "logging", "audit")
_EPILOG = (
    "exit status: 0 done; 2 wrong arguments (unknown role, user or token, a user that "
    "exists, a refused password), or no archive where the settings point"
)


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown role {text!r}: one of {', '.join(Role)}"
        ) from None


def _days(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= 36_500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 36500")
    return int(text)


def register(subparsers: Subparsers) -> None:
    """Add ``user`` and ``token``, each with its own actions."""
    user = subparsers.add_parser("user", help="the HTTP port's users ([auth] mode local)")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = _action(actions, "add", "add a user (asks for the password twice)", _user_add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", type=_role, required=True, help=f"one of {', '.join(Role)}")
    _password_flag(add)
    password = _action(actions, "password", "set a user's password", _user_password)
    password.add_argument("name", metavar="NAME")
    _password_flag(password)
    _action(actions, "list", "list the users (name, role, created)", _user_list)
    remove = _action(actions, "remove", "remove a user, their tokens and log-ins", _user_remove)
    remove.add_argument("name", metavar="NAME")

    token = subparsers.add_parser("token", help="API tokens of the HTTP port's users")
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _action(actions, "create", "make a token for a user; printed once", _token_create)
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--expires", type=_days, metavar="DAYS", help="valid for DAYS days (default: until revoked)"
    )
    listing = _action(actions, "list", "list tokens (their ids, never the tokens)", _token_list)
    listing.add_argument("name", metavar="NAME", nargs="?")
    revoke = _action(actions, "revoke", "revoke a token at once", _token_revoke)
    revoke.add_argument("token_id", metavar="TOKEN_ID")


Action = Callable[[Archive, argparse.Namespace, "_Trail"], int]


class _Trail:
    """The changes this command makes, as audit messages by whoever runs it, from here."""

    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor
        try:
            runner = getpass.getuser()
        except (KeyError, OSError):
            runner = "?"
        self.who = Who(runner, socket.gethostname())

    def user(self, name: str, what: str) -> None:
        self.auditor.user_changed(self.who, name, what)

    def token(self, name: str, what: str) -> None:
        self.auditor.token_changed(self.who, name, what)


def _action(actions: Subparsers, name: str, help: str, action: Action) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, epilog=_EPILOG)
    add_setting_flags(parser, _SECTIONS)
    parser.set_defaults(run=run, action_run=action)
    return parser


def _password_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Open the archive (never make one) and the audit trail, and run the action."""
    from pypacs.server import open_archive

    archive = open_archive(settings, create=False)
    try:
        with open_auditor(settings.audit_options()) as auditor:
            action: Action = args.action_run
            return action(archive, args, _Trail(auditor))
    except AccountError as exc:
        print(f"pypacs: {exc}", file=sys.stderr)
        return 2
    finally:
        archive.close()


def _read_password(args: argparse.Namespace) -> str | None:
    """The new password, or None (said why) when it is refused."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            print("pypacs: the two passwords differ", file=sys.stderr)
            return None
    if len(password) < MIN_PASSWORD_LENGTH:
        print(
            f"pypacs: a password needs at least {MIN_PASSWORD_LENGTH} characters",
            file=sys.stderr,
        )
        return None
    return password


def _user_add(archive: Archive, args: argparse.Namespace, trail: _Trail) -> int:
    password = _read_password(args)
    if password is None:
        return 2
    user = archive.accounts.add_user(args.name, args.role, password)
    trail.user(user.name, f"user {user.name} added with the {user.role} role")
    print(f"added user {user.name} ({user.role})")
    return 0


def _user_password(archive: Archive, args: argparse.Namespace, trail: _Trail) -> int:
    password = _read_password(args)
    if password is None:
        return 2
    archive.accounts.set_password(args.name, password)
    trail.user(args.name, f"password of user {args.name} changed")
    print(f"password of {args.name} changed")
    return 0


def _user_list(archive: Archive, _args: argparse.Namespace, _trail: _Trail) -> int:
    users = archive.accounts.users()
    width = max((len(u.name) for u in users), default=4)
    print(f"{'NAME':<{width}}  {'ROLE':<6}  CREATED")
    for user in users:
        print(f"{user.name:<{width}}  {user.role:<6}  {user.created}")
    return 0


def _user_remove(archive: Archive, args: argparse.Namespace, trail: _Trail) -> int:
    archive.accounts.remove_user(args.name)
    trail.user(args.name, f"user {args.name} removed, with their tokens and log-ins")
    print(f"removed user {args.name}")
    return 0


def _token_create(archive: Archive, args: argparse.Namespace, trail: _Trail) -> int:
    made = archive.accounts.create_token(args.name, args.expires)
    until = made.token.expires or "revoked"
    trail.token(args.name, f"token {made.token.id} of user {args.name} created, until {until}")
    # The token alone on standard output (for scripts); it is never shown again.
    print(f"token {made.token.id} for {args.name}, valid until {until}:", file=sys.stderr)
    print(made.secret)
    return 0


def _token_list(archive: Archive, args: argparse.Namespace, _trail: _Trail) -> int:
    tokens = archive.accounts.tokens(args.name)
    print("ID            USER  CREATED  EXPIRES  REVOKED")
    for token in tokens:
        print(
            f"{token.id}  {token.user}  {token.created}  {token.expires or '-'}  "
            f"{token.revoked or '-'}"
        )
    return 0


def _token_revoke(archive: Archive, args: argparse.Namespace, trail: _Trail) -> int:
    owner = next((t.user for t in archive.accounts.tokens() if t.id == args.token_id), "?")
    archive.accounts.revoke_token(args.token_id)
    trail.token(owner, f"token {args.token_id} of user {owner} revoked")
    print(f"revoked token {args.token_id}")
    return 0
