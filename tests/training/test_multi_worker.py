"""MultiWorkerMirroredStrategy from TF_CONFIG: two worker processes on loopback ports.

Both workers must finish, agree on every weight (a plain embedder and a UniversalDistiller), and
match one process training the same global
batches alone (the global-batch loss makes N workers train the one-device model); only the chief
keeps a checkpoint.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "multi_worker_run.py")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(tf_config=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_DETERMINISTIC_OPS="1")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _weights(path, prefix="w"):
    data = np.load(path)
    return int(data["replicas"]), [data[f"{prefix}{i}"] for i in
                                   range(sum(k.startswith(prefix) for k in data.files))]


def test_two_workers_on_loopback_agree_with_one_process(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    try:
        for i in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            procs.append(subprocess.Popen(
                [sys.executable, SCRIPT, str(tmp_path / "run"), str(tmp_path / f"w{i}.npz")],
                env=_env(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        single = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "single"),
                                 str(tmp_path / "single.npz")], env=_env(), timeout=240,
                                capture_output=True)
        assert single.returncode == 0, single.stderr.decode()[-3000:]
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err.decode()[-3000:]
    finally:
        for p in procs:   # never leave a worker behind (a hung collective waits forever)
            if p.poll() is None:
                p.kill()
                p.wait()
    (n0, w0), (n1, w1), (n, ws) = (_weights(tmp_path / f) for f in
                                   ("w0.npz", "w1.npz", "single.npz"))
    assert (n0, n1, n) == (2, 2, 1)
    for a, b, c in zip(w0, w1, ws):
        np.testing.assert_array_equal(a, b)                  # the workers agree exactly
        # ... and train the 1-device model (6 SGD steps at lr 0.5: float round-off, no more).
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    _, initial = _weights(tmp_path / "w0.npz", "init")
    assert any(not np.allclose(a, b) for a, b in zip(w0, initial))   # it did train
    backup = tmp_path / "run" / "backup"
    assert sorted(f for f in os.listdir(backup) if f.endswith(".index")) == [
        "ckpt-4.index", "ckpt-6.index"]                  # the chief's; no worker scratch left
    assert not any(f.startswith(".worker") for f in os.listdir(backup))


@pytest.mark.parametrize("value", ["", "{not json"])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, value):
    from tfembed.training import strategy

    monkeypatch.setattr(strategy, "_MULTI_WORKER", [])
    if value:
        monkeypatch.setenv("TF_CONFIG", value)
    else:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy.get_strategy("multi_worker")


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        import tensorflow as tf

        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


def test_worker_role_names_the_chief():
    from tfembed.training.strategy import worker_role

    workers = {"worker": ["a:1", "b:1"]}
    assert worker_role(_Strategy(_Resolver("worker", 0, workers))) == (True, 0)
    assert worker_role(_Strategy(_Resolver("worker", 1, workers))) == (False, 1)
    with_chief = dict(workers, chief=["c:1"])
    assert worker_role(_Strategy(_Resolver("worker", 0, with_chief))) == (False, 0)
    assert worker_role(_Strategy(_Resolver("chief", 0, with_chief))) == (True, 0)
    assert worker_role(_Strategy(None)) == (True, 0)


def test_only_the_chief_exports(monkeypatch, tmp_path):
    import ml_collections

    from tfembed.training import builders as pipelines

    config = ml_collections.ConfigDict(dict(
        strategy="default", export=dict(enabled=True, root=""),
        model=dict(image_size=8, resize_size=8)))
    monkeypatch.setattr(pipelines, "worker_role", lambda: (False, 1))
    monkeypatch.setattr(pipelines.export_lib, "export_model",
                        lambda *a, **k: pytest.fail("a non-chief worker exported"))
    assert pipelines.export_models(config, str(tmp_path), [("m", object())]) == []
