"""OIDC bearer tokens checked by web/http/oidc.py on their own: keys from a file and from a
URL, what is refused, and where the role comes from."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oidcissuer import AUDIENCE, ISSUER, Issuer, JwksServer, unsigned_token
from pypacs.config import load
from pypacs.errors import ConfigError, NotAuthenticated, NotAuthorized
from pypacs.model.access import Principal, Role
from pypacs.web.http.oidc import OidcVerifier, fetch_jwks, role_of
from pypacs.web.options import OidcOptions


def options(*, jwks_file: str = "", jwks_url: str = "", roles: str = "roles") -> OidcOptions:
    return OidcOptions(ISSUER, AUDIENCE, jwks_url, jwks_file, roles)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    issuer = Issuer()
    issuer.add("rsa-1", "RSA")
    issuer.add("ec-1", "EC")
    issuer.add("ed-1", "OKP")
    return issuer


@pytest.fixture(scope="module")
def verifier(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> OidcVerifier:
    path = tmp_path_factory.mktemp("oidc") / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    return OidcVerifier(options(jwks_file=str(path)))


@pytest.mark.parametrize(
    ("kid", "alg"),
    [("rsa-1", "RS256"), ("rsa-1", "PS384"), ("ec-1", "ES256"), ("ed-1", "EdDSA")],
)
def test_a_good_token_names_its_user_and_role(
    issuer: Issuer, verifier: OidcVerifier, kid: str, alg: str
) -> None:
    token = issuer.token(kid, alg, preferred_username="alice", roles=["writer"])
    assert verifier.principal(token) == Principal("alice", Role.WRITER, "oidc")


def test_the_subject_names_the_user_without_a_preferred_username(
    issuer: Issuer, verifier: OidcVerifier
) -> None:
    principal = verifier.principal(issuer.token("rsa-1", roles=["admin", "reader"]))
    assert (principal.name, principal.role) == ("f3a1c9e2-user", Role.ADMIN)


def refusal(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(NotAuthenticated) as caught:
        verifier.principal(token)
    return caught.value.reason


@pytest.mark.parametrize(
    ("claims", "drop", "expected"),
    [
        ({"iss": "https://other.example"}, (), "Invalid issuer"),
        ({"aud": "someone-else"}, (), "Audience doesn't match"),
        ({"exp": int(time.time()) - 3600}, (), "expired"),
        ({"nbf": int(time.time()) + 3600}, (), "not yet valid (nbf)"),
        ({"iat": int(time.time()) + 3600}, (), "not yet valid (iat)"),
        ({}, ("exp",), '"exp"'),
        ({}, ("iss",), '"iss"'),
        ({}, ("aud",), '"aud"'),
        ({}, ("sub",), "no preferred_username and no sub"),
    ],
)
def test_claims_that_are_wrong_or_missing_are_refused(
    issuer: Issuer,
    verifier: OidcVerifier,
    claims: dict[str, Any],
    drop: tuple[str, ...],
    expected: str,
) -> None:
    reason = refusal(verifier, issuer.token("rsa-1", drop=drop, **claims))
    assert reason.startswith("token refused: " if drop != ("sub",) else "the token names")
    assert expected in reason


def test_clocks_a_little_apart_are_tolerated(issuer: Issuer, verifier: OidcVerifier) -> None:
    # RFC 7519 4.1.4: leeway for clock skew, 30 seconds.
    now = int(time.time())
    token = issuer.token("rsa-1", exp=now - 10, nbf=now + 10, iat=now + 10)
    assert verifier.principal(token).role == Role.READER


def test_a_signature_by_another_key_is_refused(issuer: Issuer, verifier: OidcVerifier) -> None:
    impostor = Issuer()
    other = impostor.add("rsa-1", "RSA")
    assert "Signature verification failed" in refusal(verifier, issuer.token("rsa-1", key=other))


def test_alg_none_is_refused(verifier: OidcVerifier) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 600}
    token = unsigned_token({"alg": "none", "kid": "rsa-1"}, claims, None)
    assert refusal(verifier, token) == "the token's algorithm 'none' is not accepted"


def test_hmac_keyed_with_the_public_key_is_refused(issuer: Issuer, verifier: OidcVerifier) -> None:
    # The key-confusion attack: HS256 "signed" with the issuer's public key, which anyone has.
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 600}
    for secret in (issuer.public_pem("rsa-1"), json.dumps(issuer.jwks()["keys"][0]).encode()):
        token = unsigned_token({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims, secret)
        assert refusal(verifier, token) == "the token's algorithm 'HS256' is not accepted"


def test_an_algorithm_of_another_key_type_is_refused(
    issuer: Issuer, verifier: OidcVerifier
) -> None:
    # ES256 named for an RSA key: refused before any signature check.
    token = issuer.token("rsa-1", "ES256", key=issuer.keys["ec-1"])
    assert "does not fit its key 'rsa-1'" in refusal(verifier, token)


def test_an_unknown_kid_and_garbage_are_refused(issuer: Issuer, verifier: OidcVerifier) -> None:
    token = issuer.token("rsa-9", key=issuer.keys["rsa-1"])
    assert refusal(verifier, token) == "no key of the issuer has the token's kid 'rsa-9'"
    assert refusal(verifier, "not.a.token").startswith("not a JWT")
    assert refusal(verifier, "").startswith("not a JWT")


def test_a_token_without_a_pypacs_role_is_not_authorized(
    issuer: Issuer, verifier: OidcVerifier
) -> None:
    for roles in (["offline_access", "uma_authorization"], "Admin", None):
        with pytest.raises(NotAuthorized) as caught:
            verifier.principal(issuer.token("rsa-1", roles=roles))
        assert caught.value.reason == (
            "the token's 'roles' claim names none of the roles reader, writer, admin"
        )


@pytest.mark.parametrize(
    ("claims", "claim", "role"),
    [
        ({"roles": ["reader", "writer"]}, "roles", Role.WRITER),
        ({"roles": "reader admin"}, "roles", Role.ADMIN),
        ({"roles": "writer"}, "roles", Role.WRITER),
        (
            {"realm_access": {"roles": ["offline_access", "admin"]}},
            "realm_access.roles",
            Role.ADMIN,
        ),
        ({"https://pacs.example/roles": ["reader"]}, "https://pacs.example/roles", Role.READER),
        ({"realm_access": ["admin"]}, "realm_access.roles", None),
        ({"roles": [1, {"admin": True}]}, "roles", None),
        ({}, "roles", None),
    ],
)
def test_the_role_is_the_highest_the_claim_names(
    claims: dict[str, Any], claim: str, role: Role | None
) -> None:
    assert role_of(claims, claim) == role


def test_a_nested_roles_claim_is_read_from_tokens(issuer: Issuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    keycloak = OidcVerifier(options(jwks_file=str(path), roles="realm_access.roles"))
    token = issuer.token("ec-1", "ES256", realm_access={"roles": ["writer"]}, roles=["admin"])
    assert keycloak.principal(token).role == Role.WRITER


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ('{"kty": "RSA"}', "not a JWK Set"),
        ('{"keys": []}', "no usable signature key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', "no usable signature key"),
    ],
)
def test_a_bad_key_file_is_a_configuration_error(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        OidcVerifier(options(jwks_file=str(path)))
    assert str(caught.value).startswith(f"[auth.oidc] jwks_file = {str(path)!r}: ")
    assert expected in str(caught.value)


def test_keys_not_for_signing_or_symmetric_are_left_out(issuer: Issuer, tmp_path: Path) -> None:
    jwks = issuer.jwks()
    rsa = jwks["keys"][0]
    jwks["keys"] = [
        {**rsa, "use": "enc"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1", "alg": "HS256"},
        {**rsa, "kid": "other"},
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    verifier = OidcVerifier(options(jwks_file=str(path)))
    assert "kid 'rsa-1'" in refusal(verifier, issuer.token("rsa-1"))
    good = issuer.token("other", key=issuer.keys["rsa-1"])
    assert verifier.principal(good).role == Role.READER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_server(issuer: Issuer) -> Iterator[JwksServer]:
    with JwksServer({"keys": issuer.jwks()["keys"][:1]}).running() as server:
        yield server


def test_keys_from_a_url_are_fetched_once_and_again_for_an_unknown_kid(
    issuer: Issuer, jwks_server: JwksServer
) -> None:
    clock = Clock()
    verifier = OidcVerifier(options(jwks_url=jwks_server.url), clock=clock)
    assert verifier.principal(issuer.token("rsa-1")).role == Role.READER
    assert verifier.principal(issuer.token("rsa-1")).role == Role.READER
    assert jwks_server.requests == 1
    # A key the issuer added since: an unknown kid within the minute is not fetched again...
    jwks_server.body = issuer.jwks()
    clock.now += 30
    ec_token = issuer.token("ec-1", "ES256")
    assert refusal(verifier, ec_token) == "no key of the issuer has the token's kid 'ec-1'"
    assert jwks_server.requests == 1
    # ... past it, it is, once, however many tokens name unknown keys.
    clock.now += 31
    assert verifier.principal(ec_token).role == Role.READER
    assert refusal(verifier, issuer.token("nope", key=issuer.keys["rsa-1"])).endswith("'nope'")
    assert jwks_server.requests == 2


def test_keys_older_than_an_hour_are_fetched_again(issuer: Issuer, jwks_server: JwksServer) -> None:
    clock = Clock()
    verifier = OidcVerifier(options(jwks_url=jwks_server.url), clock=clock)
    assert verifier.principal(issuer.token("rsa-1")).role == Role.READER
    jwks_server.body = {"keys": issuer.jwks()["keys"][1:]}  # rsa-1 revoked
    clock.now += 3601
    assert "kid 'rsa-1'" in refusal(verifier, issuer.token("rsa-1"))
    assert jwks_server.requests == 2


def test_a_failed_fetch_refuses_tokens_and_is_logged(
    issuer: Issuer, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    jwks_server.status = 500
    with caplog.at_level(logging.ERROR, "pypacs.web.oidc"):
        verifier = OidcVerifier(options(jwks_url=jwks_server.url), clock=clock)
        reason = refusal(verifier, issuer.token("rsa-1"))
    assert reason == f"the issuer's keys are not available ({jwks_server.url})"
    assert f"cannot fetch the OIDC keys from {jwks_server.url}: HTTP Error 500" in caplog.text
    # The issuer back, a minute later: tokens are accepted again.
    jwks_server.status = 200
    clock.now += 61
    assert verifier.principal(issuer.token("rsa-1")).role == Role.READER


def test_an_unreachable_or_wrong_key_url_refuses_tokens(
    issuer: Issuer, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_server.body = ["not", "a", "key", "set"]
    with caplog.at_level(logging.ERROR, "pypacs.web.oidc"):
        wrong = OidcVerifier(options(jwks_url=jwks_server.url))
        assert "not available" in refusal(wrong, issuer.token("rsa-1"))
    assert "not a JWK Set" in caplog.text
    with pytest.raises(OSError):
        fetch_jwks("http://127.0.0.1:1/certs")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pypacs.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("oidc", "expected"),
    [
        ("", '[auth] mode = "oidc" needs [auth.oidc] issuer (the tokens\' iss)'),
        (
            f'issuer = "{ISSUER}"',
            '[auth] mode = "oidc" needs [auth.oidc] audience (the tokens\' aud)',
        ),
        (
            f'issuer = "{ISSUER}"\naudience = "a"',
            '[auth] mode = "oidc" needs exactly one of [auth.oidc] jwks_url and jwks_file (the '
            "issuer's keys)",
        ),
        (
            f'issuer = "{ISSUER}"\naudience = "a"\njwks_url = "https://x/c"\njwks_file = "k"',
            '[auth] mode = "oidc" needs exactly one of [auth.oidc] jwks_url and jwks_file (the '
            "issuer's keys)",
        ),
        (
            f'issuer = "{ISSUER}"\naudience = "a"\njwks_url = "file:///etc/passwd"',
            '[auth.oidc] jwks_url = "file:///etc/passwd": expected an https:// (or http://) URL',
        ),
    ],
)
def test_oidc_mode_needs_its_settings(tmp_path: Path, oidc: str, expected: str) -> None:
    path = write_config(tmp_path, f'[auth]\nmode = "oidc"\n[auth.oidc]\n{oidc}\n')
    with pytest.raises(ConfigError) as caught:
        load(path).web_options()
    assert str(caught.value) == f"{path}: {expected}"


def test_oidc_options_come_from_the_settings(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f'[auth]\nmode = "oidc"\n[auth.oidc]\nissuer = "{ISSUER}"\naudience = "pypacs"\n'
        'jwks_file = "keys.json"\nroles_claim = "realm_access.roles"\n',
    )
    assert load(path).web_options().oidc == OidcOptions(
        ISSUER, "pypacs", "", "keys.json", "realm_access.roles"
    )
    # Other modes build none, whatever [auth.oidc] holds.
    assert load(None).web_options().oidc is None
