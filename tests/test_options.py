"""The one option checker (python/aidb/options.py), over every declared
option of every model provider, credential, step, vector index and volume
kind, with generated JSON values: a value is either accepted (and kept as
given, a URL without its trailing slash) or refused with an InvalidInput
that names the object and the option, shows the value unless the option is
secret, and says what is allowed. No database: the checker is pure."""

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from aidb.errors import InvalidInput
from aidb.options import OptionChecker, declarations

DECLARED = [(kind, owner, option) for kind, owners in declarations().items()
            for owner, options in owners.items() for option in options]

# Any JSON value, and the edges an option's range and type invite.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
SECRET_MARK = "s3cr3t-Value"


def edge_values(option):
    """Values just inside and outside what the option allows."""
    values = [True, False, 0, -1, 1e308, "", " ", "x", {}, [], SECRET_MARK]
    for bound in (option.minimum, option.maximum):
        if bound is not None:
            values += [bound, bound - 1, bound + 1, bound - 1e-9, bound + 1e-9, float(bound)]
    return values + list(option.allowed) + [value + "x" for value in option.allowed]


def check(option, value):
    """The checker's verdict on {option: value}, alone among its siblings' defaults."""
    checker = OptionChecker("thing \"t\"", (option,))
    return checker.check({option.name: value})[option.name]


def assert_verdict(option, value):
    try:
        kept = check(option, value)
    except InvalidInput as refused:
        message = refused.message
        assert message.startswith('thing "t": '), message
        assert f'"{option.name}"' in message, message
        if value is None:
            assert option.required and message.endswith("is required"), message
            return
        assert "must be" in message or "must not" in message, message
        if option.secret or option.type == "url" and "user info" in message:
            assert SECRET_MARK not in message and SECRET_MARK not in (refused.hint or "")
        else:
            assert "got " in message, message
        return
    if value is None:
        assert kept == option.default or option.default_from, (option, kept)
    elif option.type == "url":
        assert kept == value.rstrip("/")
    else:
        assert kept == value and type(kept) is type(value), (option, value, kept)
        assert not (option.type in ("integer", "number") and isinstance(value, bool))
        if option.type in ("integer", "number"):
            assert not math.isnan(value)
            assert option.minimum is None or value >= option.minimum
            assert option.maximum is None or value <= option.maximum
        if option.type == "choice":
            assert value in option.allowed


@pytest.mark.parametrize("kind, owner, option", DECLARED,
                         ids=[f"{k}-{o}-{opt.name}" for k, o, opt in DECLARED])
def test_edge_values_are_kept_or_refused_by_name(kind, owner, option):
    for value in edge_values(option):
        assert_verdict(option, value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DECLARED), JSON)
def test_any_json_value_is_kept_or_refused_by_name(declared, value):
    assert_verdict(declared[2], value)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(DECLARED), st.text(min_size=1, max_size=12))
def test_unknown_options_are_refused_with_the_known_ones(declared, name):
    kind, owner, option = declared
    siblings = declarations()[kind][owner]
    if name in {sibling.name for sibling in siblings}:
        return
    with pytest.raises(InvalidInput) as refused:
        OptionChecker("thing \"t\"", siblings).check({name: 1})
    assert refused.value.message.startswith(f'thing "t": unknown option "{name}"')
    for sibling in siblings:
        assert sibling.name in refused.value.hint


def test_a_secret_never_appears_in_any_refusal():
    """Every secret option, given a wrong type or a whole object of the
    wrong shape holding the secret, is refused without showing it."""
    secrets = [(kind, owner, option) for kind, owner, option in DECLARED if option.secret]
    assert {option.name for _, _, option in secrets} >= {
        "api_key", "credentials_env", "secret_access_key", "access_key_id", "session_token"}
    for kind, owner, option in secrets:
        siblings = declarations()[kind][owner]
        for bad in ([SECRET_MARK], {"x": SECRET_MARK}, " " + SECRET_MARK + "\n" if
                    option.pattern else [SECRET_MARK]):
            with pytest.raises(InvalidInput) as refused:
                OptionChecker("thing", siblings).check({option.name: bad})
            shown = refused.value.message + (refused.value.hint or "")
            assert SECRET_MARK not in shown, shown
        with pytest.raises(InvalidInput) as refused:
            OptionChecker("thing", siblings).check([SECRET_MARK])
        assert SECRET_MARK not in refused.value.message


def test_declarations_are_data_the_docs_can_read():
    """Every declaration says what it is and what it allows, in JSON terms."""
    for kind, owner, option in DECLARED:
        assert option.description.strip(), (kind, owner, option.name)
        assert option.must_be()
        json.dumps(option.default)
        if option.type == "choice":
            assert option.allowed and option.default in (None, *option.allowed)
        if option.default_from:
            assert option.default_from in {o.name for o in declarations()[kind][owner]}
