"""The storage watcher's rules and reports: pure functions of what its probes saw."""

import struct

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from hubkeeper import prtg
from hubkeeper.config import ConfigError, StorageOwncloudConfig
from hubkeeper.loader import from_dict
from hubkeeper.watchers.storage import nfs
from hubkeeper.watchers.storage.documents import snapshot_documents
from hubkeeper.watchers.storage.logic import (
    Check,
    MountStatus,
    ServerOnNode,
    Snapshot,
    affected,
    merge_usage,
    mount_state,
    owncloud_state,
    state_since,
    top_users,
)
from hubkeeper.watchers.storage.owncloud import OwncloudResult, webdav_url
from hubkeeper.watchers.storage.probe import OPERATIONS, results
from hubkeeper.watchers.storage.report import StorageCollector, sensor, status_document


def lines(*ops: tuple[str, bool | None], error: str = "EIO: I/O error") -> list[dict]:
    """A probe child's output: each op started; True/False: it ended so; None: no end."""
    records = []
    for op, ok in ops:
        records.append({"op": op, "phase": "start"})
        if ok is not None:
            end = {"op": op, "ok": ok, "seconds": 0.01}
            if op == "statvfs" and ok:
                end.update(size_bytes=1000, free_bytes=50, inodes=100, free_inodes=40)
            if not ok:
                end["error"] = error
            records.append(end)
    return records


ALL_OK = lines(*((op, True) for op in OPERATIONS))


# --- a probe's outcome -----------------------------------------------------------------------


def test_an_operation_that_never_returned_is_hung_and_the_rest_did_not_run() -> None:
    result = results(lines(("stat", True), ("statvfs", True), ("write", None)), True, 5.0)
    outcomes = {op.op: op.outcome for op in result.ops}
    assert outcomes == {"stat": "ok", "statvfs": "ok", "write": "hung", "fsync": "not_run",
                        "read": "not_run", "remove": "not_run"}  # fmt: skip
    assert result.ops[2].seconds == 5.0 and result.capacity["free_bytes"] == 50
    assert mount_state(result, slow=1.0) == "hung"


def test_a_hung_probe_is_hung_not_slow_however_fast_the_other_operations_were() -> None:
    assert mount_state(results(lines(("stat", None)), True, 0.2), slow=60.0) == "hung"


def test_a_failed_write_makes_the_mount_failed_with_the_error() -> None:
    ops = (("stat", True), ("statvfs", True), ("write", False), ("remove", True))
    result = results(lines(*ops, error="ENOSPC: No space left"), False, 0.1)
    assert mount_state(result, slow=1.0) == "failed"
    assert [op.error for op in result.ops if op.outcome == "failed"] == ["ENOSPC: No space left"]


def test_slow_past_the_threshold_in_all_else_ok() -> None:
    result = results(ALL_OK, False, 0.06)
    assert mount_state(result, slow=0.05) == "slow"
    assert mount_state(result, slow=0.07) == "ok"
    assert mount_state(None, slow=1.0) == "unknown"


def test_a_state_keeps_its_start_time_until_it_changes() -> None:
    assert state_since("hung", 100.0, "hung", 130.0) == 100.0
    assert state_since("hung", 100.0, "ok", 130.0) == 130.0


# --- who is affected -------------------------------------------------------------------------


def test_servers_are_named_by_the_hung_mount_their_paths_lie_on() -> None:
    servers = [
        ServerOnNode("alice", "", "jupyter-alice", ("/srv/nb/alice",)),
        ServerOnNode("bob", "gpu", "jupyter-bob-gpu", ("/srv/nbx/bob", "/scratch/bob")),
        ServerOnNode("carol", "", "jupyter-carol", ("/srv/nb",)),
    ]
    mounts = {"nb": "/srv/nb", "scratch": "/scratch"}
    found = affected(servers, mounts, ["nb"])
    assert [(s.user, m) for s, m in found] == [("alice", "nb"), ("carol", "nb")]  # not /srv/nbx
    assert [(s.user, m) for s, m in affected(servers, mounts, ["nb", "scratch"])] == [
        ("alice", "nb"), ("bob", "scratch"), ("carol", "nb"),
    ]  # fmt: skip
    assert affected(servers, mounts, []) == []


# --- usage -----------------------------------------------------------------------------------


def test_usage_keeps_finished_homes_and_drops_those_gone_when_a_pass_starts() -> None:
    usage = {"alice": 10, "bob": 20}
    assert merge_usage(usage, {"alice": 15}, None) == {"alice": 15, "bob": 20}
    assert merge_usage(usage, {"carol": 5}, ["alice", "carol"]) == {"alice": 10, "carol": 5}


def test_top_users_largest_first_ties_by_name() -> None:
    assert top_users({"b": 5, "a": 5, "c": 9, "d": 1}, 3) == [("c", 9), ("a", 5), ("b", 5)]


# --- Owncloud --------------------------------------------------------------------------------


def test_owncloud_states_from_its_status_document() -> None:
    up = {"installed": True, "maintenance": False, "needsDbUpgrade": False, "version": "10.13.4.3"}
    assert owncloud_state(up) == "up"
    assert owncloud_state({**up, "maintenance": True}) == "maintenance"
    assert owncloud_state({**up, "needsDbUpgrade": True}) == "maintenance"
    assert owncloud_state({**up, "installed": False}) == "not_installed"
    assert owncloud_state(None) == "down"


# --- NFS: the RPC messages -------------------------------------------------------------------


def test_an_rpc_call_is_one_last_fragment_with_rpc_version_2_and_padded_arguments() -> None:
    message = nfs.call_message(7, nfs.MOUNT, 3, 1, nfs.opaque(b"/srv"), nfs.auth_sys("n1"))
    header, xid, kind, version, program, prog_version, procedure = struct.unpack_from(
        ">7I", message
    )
    assert header == 0x80000000 | (len(message) - 4)
    assert (xid, kind, version, program, prog_version, procedure) == (7, 0, 2, 100005, 3, 1)
    assert message.endswith(struct.pack(">I", 4) + b"/srv")
    assert nfs.opaque(b"abcde") == struct.pack(">I", 5) + b"abcde\0\0\0"


def test_a_denied_or_unaccepted_reply_is_an_error_naming_why() -> None:
    accepted = struct.pack(">6I", 9, 1, 0, 0, 0, 1)  # PROG_UNAVAIL
    denied = struct.pack(">5I", 9, 1, 1, 1, 5)  # AUTH_ERROR, too weak
    for reply, text in ((accepted, "PROG_UNAVAIL"), (denied, "AUTH_ERROR")):
        try:
            nfs.parse_reply(9, reply)
        except nfs.RpcError as exc:
            assert text in str(exc)
        else:
            raise AssertionError("accepted a failed reply")
    assert nfs.parse_reply(9, struct.pack(">7I", 9, 1, 0, 0, 0, 0, 42)).uint() == 42


# --- reports ---------------------------------------------------------------------------------


def hung_snapshot() -> Snapshot:
    hung = results(lines(("stat", None)), True, 7.5)
    mounts = (
        MountStatus(
            "nb",
            "/srv/nb",
            "hung",
            100.0,
            hung,
            {"size_bytes": 1000, "free_bytes": 50, "inodes": 100, "free_inodes": 40},
            {"alice": 300, "bob": 700},
        ),  # fmt: skip
        MountStatus("scratch", "/scratch", "ok", 50.0, results(ALL_OK, False, 0.06)),
    )
    servers = (ServerOnNode("alice", "", "jupyter-alice", ("/srv/nb/alice",)),
               ServerOnNode("dave", "", "jupyter-dave", ("/scratch/dave",)))  # fmt: skip
    check = nfs.NfsCheck("down", {"portmap": Check(False, 5.0, "timed out")})
    owncloud = OwncloudResult("maintenance", {"status": Check(True, 0.02)}, {"version": "10.13"})
    return Snapshot("n1", mounts, servers, {"filer": check}, owncloud)


def test_metrics_show_the_hung_mount_its_servers_and_the_top_users() -> None:
    registry = CollectorRegistry()
    registry.register(StorageCollector(hung_snapshot, top=1))
    text = generate_latest(registry).decode()
    assert 'hubkeeper_storage_mount_hung{mount="nb",node="n1"} 1.0' in text
    assert 'hubkeeper_storage_mount_hung_seconds{mount="nb",node="n1"} 7.5' in text
    assert 'hubkeeper_storage_operation_ok{mount="nb",node="n1",operation="stat"} 0.0' in text
    assert ('hubkeeper_storage_server_on_hung_storage{container="jupyter-alice",mount="nb",'
            'node="n1",server="",user="alice"} 1.0') in text  # fmt: skip
    assert "dave" not in text  # his files are on the mount that answers
    assert 'user_usage_bytes{mount="nb",node="n1",user="bob"} 700.0' in text
    assert 'user="alice"} 300' not in text  # top 1
    assert 'hubkeeper_storage_nfs_up{node="n1",server="filer"} 0.0' in text
    assert 'hubkeeper_storage_owncloud_state{node="n1",state="maintenance"} 1.0' in text


def test_status_names_every_server_on_the_node_and_those_on_hung_storage() -> None:
    document = status_document(hung_snapshot(), top=5)
    assert document["hung"] == ["nb"]
    assert [s["user"] for s in document["servers"]] == ["alice", "dave"]
    assert document["servers_on_hung_storage"] == [
        {"user": "alice", "server": "", "container": "jupyter-alice", "mount": "nb"}
    ]
    assert document["mounts"]["nb"]["operations"]["stat"]["outcome"] == "hung"


def test_the_prtg_sensor_is_valid_and_names_the_hung_servers() -> None:
    payload = sensor(hung_snapshot(), top=10)
    assert prtg.check(payload) == []
    channels = {c["channel"]: c["value"] for c in payload["prtg"]["result"]}
    assert channels["nb hung"] == 1 and channels["scratch hung"] == 0
    assert channels["nb free space"] == 5.0 and channels["NFS filer up"] == 0
    assert channels["Owncloud maintenance"] == 1 and channels["nb home bob"] == 700
    assert "alice" in payload["prtg"]["text"] and "n1" in payload["prtg"]["text"]


def test_the_prtg_sensor_stays_within_50_channels_with_many_homes() -> None:
    snap = hung_snapshot()
    many = {f"user{i:03}": i for i in range(200)}
    mounts = tuple(
        MountStatus(m.name, m.path, m.state, m.since, m.result, m.capacity, many)
        for m in snap.mounts
    )
    payload = sensor(Snapshot("n1", mounts, snap.servers, snap.nfs, snap.owncloud), top=40)
    assert prtg.check(payload) == [] and len(payload["prtg"]["result"]) == prtg.MAX_CHANNELS


def test_the_prtg_sensor_is_an_error_when_nothing_is_configured() -> None:
    assert sensor(Snapshot("n1", (), (), {}, None), top=10)["prtg"]["error"] == 1


# --- configuration ---------------------------------------------------------------------------


def test_storage_config_problems_name_the_key() -> None:
    data = {
        "storage": {
            "slow": 9.0,
            "timeout": 5.0,
            "mounts": [{"name": "nb", "path": "/srv/nb"}, {"name": "nb", "path": "relative"}],
            "nfs": [{"name": "filer", "host": "filer"}],
        }
    }
    with pytest.raises(ConfigError) as error:
        from_dict(data)
    text = "\n".join(error.value.problems)
    assert "storage.slow: expected at most timeout" in text
    assert "storage.mounts: expected unique names" in text
    assert "storage.mounts[1].path" in text and "an absolute path" in text
    assert "storage.nfs[0].name: expected a name, a host and an export" in text


def test_the_webdav_url_defaults_to_owncloud_s_files_of_the_user() -> None:
    config = StorageOwncloudConfig(url="https://cloud.lab/", user="monitor me", canary_path="/a b")
    assert webdav_url(config) == "https://cloud.lab/remote.php/dav/files/monitor%20me/a%20b"
    other = StorageOwncloudConfig(url="https://cloud.lab", webdav_url="https://dav.lab/u/")
    assert webdav_url(other) == "https://dav.lab/u/"


def test_snapshot_documents_give_each_mount_its_state_free_space_and_servers_on_it() -> None:
    (hung, ok) = [doc for _, doc in snapshot_documents(hung_snapshot(), 1.7e9, "host-1")]
    assert (hung["labels.node"], hung["labels.mount"], hung["hubkeeper.storage.state"]) == (
        "n1", "nb", "hung",
    )  # fmt: skip
    assert hung["hubkeeper.storage.hung"] is True and hung["hubkeeper.storage.servers_on_hung"] == 1
    assert hung["hubkeeper.storage.free_pct"] == 5.0  # the last figures read
    assert hung["hubkeeper.storage.free_inodes_pct"] == 40.0
    assert "hubkeeper.storage.probe.seconds" not in hung  # a hung probe has no duration
    assert ok["hubkeeper.storage.state"] == "ok" and ok["hubkeeper.storage.hung"] is False
    assert ok["hubkeeper.storage.servers_on_hung"] == 0
    assert ok["hubkeeper.storage.probe.seconds"] > 0 and "hubkeeper.storage.free_pct" not in ok
    assert {hung["event.dataset"], hung["@timestamp"][:4]} == {"hubkeeper.storage", "2023"}
