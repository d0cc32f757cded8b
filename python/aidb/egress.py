"""What the server may reach on a user's behalf, bounded by two settings that
only superusers change (docs/architecture.md, "Security model"):

- aidb.allowed_model_hosts: the hosts that model URLs may name. '*' (the
  default) allows any; otherwise a comma-separated list of host names, IP
  addresses and '*.example.com' wildcards; empty allows none.
- aidb.allowed_local_paths: the directories that file:// volumes may read
  (comma-separated absolute paths; empty, the default, allows none).

Hosts are compared exactly, after urllib has parsed the URL: so
"http://allowed.com@evil.com/" is evil.com, and "127.0.0.1.evil.com" is not
127.0.0.1. Case and a trailing dot do not matter. A wildcard matches names
below its domain, never the domain itself and never an IP address. Anything
the parser and the HTTP client could read differently (user info,
backslashes, whitespace) is refused outright. Names are not resolved: the
allowlist bounds what a URL may say, and the administrator who allows a name
trusts its DNS.
"""

import ipaddress
import os
import re
from urllib.parse import urlsplit

from .errors import AidbError, ModelError, INSUFFICIENT_PRIVILEGE, PIPELINE_PERMANENT

HOSTS_SETTING = "aidb.allowed_model_hosts"
PATHS_SETTING = "aidb.allowed_local_paths"

# The settings as the C module holds them (never a session placeholder).
HOSTS_QUERY = "SELECT aidb._allowed_model_hosts() AS v"
PATHS_QUERY = "SELECT aidb._allowed_local_paths() AS v"

_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)"
                        r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_UNSAFE = re.compile(r"[\s\\\x00-\x1f\x7f]")


def check_model_url(model_name, url, allowed_hosts):
    """Refuse (PipelinePermanent, so a pipeline using the model blocks) a
    model URL whose host `allowed_hosts`, the setting's value, leaves out."""
    check_url(f'model "{model_name}"', url, allowed_hosts)


def check_url(what, url, allowed_hosts):
    """The same for any endpoint aidb calls (models, S3-compatible volumes):
    `what` names the object in the error."""
    if url is None:
        return
    host = url_host(url)
    if host is None or not host_allowed(host, parse_allowed_hosts(allowed_hosts)):
        shown = host if host is not None else url
        raise ModelError(f'{what}: host "{shown}" is not allowed by {HOSTS_SETTING}',
                         sqlstate=INSUFFICIENT_PRIVILEGE, category=PIPELINE_PERMANENT,
                         detail=f"{HOSTS_SETTING} is {_shown_setting(allowed_hosts)}.",
                         hint=f"A superuser can add the host to {HOSTS_SETTING} "
                              "(ALTER SYSTEM SET ...; SELECT pg_reload_conf()).")


def url_host(url):
    """The normalised host of an http(s) URL, or None when the URL is one
    that parsers could read differently."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:          # such as an unclosed IPv6 bracket
        return None
    # urlsplit drops tabs and newlines anywhere, so look at the URL as given.
    if _UNSAFE.search(url) or "@" in parts.netloc or not parts.netloc.isascii():
        return None
    return normalise_host(host) if host else None


def normalise_host(host):
    """Lower case, no trailing dot, IPv6 without brackets, IPs in canonical form."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def parse_allowed_hosts(value):
    """None (any host) for '*', else [(kind, pattern)] with kind one of
    'exact' and 'below'. A malformed entry is an error, never ignored: a
    typo must not widen or silently narrow the list."""
    entries = [entry.strip() for entry in (value or "").split(",") if entry.strip()]
    if "*" in entries:
        return None
    patterns = []
    for entry in entries:
        wildcard = entry.startswith("*.")
        host = normalise_host(entry[2:] if wildcard else entry)
        if not _is_host(host) or (wildcard and _is_ip(host)):
            raise AidbError(f'{HOSTS_SETTING} has an invalid entry "{entry}"',
                            category=PIPELINE_PERMANENT,
                            hint="Entries are host names, IP addresses or *.domain wildcards, "
                                 "separated by commas.")
        patterns.append(("below" if wildcard else "exact", host))
    return patterns


def host_allowed(host, patterns):
    if patterns is None:
        return True
    for kind, pattern in patterns:
        if kind == "exact" and host == pattern:
            return True
        if kind == "below" and not _is_ip(host) and host.endswith("." + pattern):
            return True
    return False


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _is_host(host):
    return _is_ip(host) or bool(_HOST_NAME.match(host))


def _shown_setting(value):
    return f'"{value}"' if value else "empty"


def path_allowed(path, allowed_paths):
    """Whether `path` (after resolving symbolic links and "..") lies in one of
    the directories of aidb.allowed_local_paths (file:// volumes call this
    before opening anything). A relative entry allows nothing."""
    roots = [os.path.realpath(root.strip()) for root in (allowed_paths or "").split(",")
             if os.path.isabs(root.strip())]
    if not os.path.isabs(path):
        return False
    resolved = os.path.realpath(path)
    return any(os.path.commonpath([root, resolved]) == root for root in roots)
