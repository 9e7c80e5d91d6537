"""Lines a hostile (or careless) user server can print, each one that once stalled, slowed
or leaked through the shipper; shared by the unit, integration and benchmark runs.

Every secret is unique, so a search for it in every field of every document proves that
it did not get through.
"""

from __future__ import annotations

SECRETS = [f"hkSECRET{n:02d}x" for n in range(12)]

# (name, the line without its newline)
HOSTILE: list[tuple[str, bytes]] = [
    ("json-time-1e300", b'{"time": 1e300, "msg": "a time past any calendar"}'),
    ("json-nan", b'{"time": NaN, "msg": "not a number", "v": NaN, "w": -Infinity}'),
    ("json-1e400", b'{"ts": 1e400, "msg": "a float no double holds", "x": -1e400}'),
    ("json-lone-surrogate", b'{"msg": "half a character \\ud800 here"}'),
    ("json-deep", b'{"msg": "deep", "a": ' + b'{"a": ' * 60 + b"1" + b"}" * 61),
    ("json-wrong-types", b'{"message": ["a", 1], "level": {"x": 1}, "time": [1, 2], "name": true}'),
    ("json-feb-30", b'{"@timestamp": "2026-02-30T10:00:00Z", "msg": "February 30"}'),
    ("json-month-13", b'{"timestamp": "2026-13-01T10:00:00Z", "msg": "month 13"}'),
    ("json-year-0", b'{"time": "0000-01-01T00:00:00Z", "msg": "year 0"}'),
    ("json-year-10000", b'{"time": "10000-01-01T00:00:00Z", "msg": "year 10000"}'),
    ("json-hour-24", b'{"time": "2026-11-25T24:00:00Z", "msg": "hour 24"}'),
    ("json-epoch-year-10000", b'{"ts": 253402300800, "msg": "epoch seconds past 9999"}'),
    ("tornado-hour-24", b"[I 2026-11-25 24:00:00.000 SingleUserLabApp app:1] hour 24"),
    ("tornado-feb-30", b"[W 2026-02-30 10:00:00.000 SingleUserLabApp app:1] February 30"),
    ("nginx-feb-31", b'127.0.0.1 - - [31/Feb/2026:10:00:00 +0100] "GET / HTTP/1.1" 200 1 "-" "-"'),
    ("nginx-error-month-13", b"2026/13/01 10:00:00 [error] 1#1: *1 month 13"),
    ("chp-hour-25", b"25:61:61.000 [ConfigProxy] info: no such time"),
    ("regex-bomb-userinfo", b"token " + b"a." * 60_000),
    ("regex-bomb-words", b"x" * 100_000 + b"://" + b"a:" * 20_000),
    ("forged-identity", b'{"msg": "I am someone else", "logger": "hubkeeper.watcher", '
     b'"user": "alice", "container.name": "jupyter-alice"}'),
    ("forged-hub-line", b"[I 2026-11-25 10:00:00.000 JupyterHub base:1] User alice took 1.0 "
     b"seconds to start"),
    ("control-characters", b"\x1b[31mred\x1b[0m \x00 nul \x07 bell \x7f del"),
    ("invalid-utf8", b"caf\xe9 \xff\xfe not utf-8"),
    ("secret-json-api-token", b'{"msg": "token by key", "api_token": "' + SECRETS[0].encode()
     + b'"}'),
    ("secret-json-header", b'{"msg": "header", "headers": {"Authorization": "token '
     + SECRETS[1].encode() + b'"}}'),
    ("secret-json-bearer", b'{"msg": "bearer", "authorization": "Bearer ' + SECRETS[2].encode()
     + b'"}'),
    ("secret-url-encoded", b"GET /hub/api/users?token%3D" + SECRETS[3].encode() + b"&x=1"),
    ("secret-hub-header", b"X-JupyterHub-Api-Token: " + SECRETS[4].encode()),
    ("secret-password", b"connecting with password=" + SECRETS[5].encode() + b" now"),
    ("secret-xsrf", b"POST /hub/login?next=%2Fhub%2F&_xsrf=" + SECRETS[6].encode()),
    ("secret-userinfo", b"pulling https://alice:" + SECRETS[7].encode() + b"@git.example.org/r"),
    ("secret-cookie", b"Cookie: jupyterhub-session-id=" + SECRETS[8].encode() + b"; other="
     + SECRETS[9].encode()),
    ("secret-nested-list", b'{"msg": "list", "servers": [{"name": "a", "password": "'
     + SECRETS[10].encode() + b'"}]}'),
    ("secret-python-dict", b"{'Authorization': 'token " + SECRETS[11].encode() + b"'}"),
]  # fmt: skip
