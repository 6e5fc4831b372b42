"""`prune.shards.ShardWriter`: each tensor goes straight into its shard file (no shard held in memory), the
shards read back bit for bit with safetensors (header padded into its room, or rewritten with a larger one),
shards split at the size asked, and the index names every tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import prune.shards as shards
from prune.lazy import INDEX_FILE, read_index


def tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "a.weight": torch.randn(7, 5),
        "b.weight": torch.randn(3, 4).to(torch.bfloat16),
        "c.half": torch.randn(6).half(),
        "d.codes": torch.randint(-(2**31), 2**31 - 1, (4, 3), dtype=torch.int32),
        "e.mask": torch.tensor([[True, False, True]]),
        "f.empty": torch.empty(0, 4),
        "g.scalar": torch.tensor(2.5),
        "h.bytes": torch.arange(11, dtype=torch.uint8),
    }


def read_back(directory: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        found.update(load_file(file))
    return found


@pytest.mark.parametrize("room", [shards.HEADER_ROOM, 24])  # 24 bytes: every header is rewritten larger
@pytest.mark.parametrize("shard_bytes", [2**20, 64])
def test_shards_read_back_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int, shard_bytes: int
) -> None:
    monkeypatch.setattr(shards, "HEADER_ROOM", room)
    writer = shards.ShardWriter(tmp_path, None, shard_bytes)
    given = tensors()
    for name, tensor in given.items():
        stored = writer.add(name, tensor, {"layout": "test"})
        assert torch.equal(stored, tensor)
    files = writer.close()
    back = read_back(tmp_path)
    assert set(back) == set(given)
    for name, tensor in given.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor)  # no NaN among them: equal values are equal bits
    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata() == {"format": "pt", "layout": "test"}
    if shard_bytes == 64:
        assert len(files) > 2 and (tmp_path / INDEX_FILE).is_file()
        index = json.loads((tmp_path / INDEX_FILE).read_text())
        assert set(index["weight_map"]) == set(given)
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in given.values())
        assert read_index(tmp_path)[0].keys() == given.keys()  # slimpack's own reader agrees
    else:
        assert [f.name for f in files] == ["model.safetensors"] and not (tmp_path / INDEX_FILE).exists()
    assert not list(tmp_path.glob(".part-*")) and not list(tmp_path.glob("*.body"))


def test_each_tensor_is_on_disk_when_add_returns(tmp_path: Path) -> None:
    """Nothing is buffered: the shard file grows by each tensor's bytes as it is added."""
    writer = shards.ShardWriter(tmp_path, torch.bfloat16)
    part = tmp_path / ".part-00001.safetensors"
    writer.add("x", torch.ones(1000, 1000))  # fp32 in, bf16 stored: 2 MB
    assert writer.shard is not None
    writer.shard.file.flush()
    assert part.stat().st_size == 8 + shards.HEADER_ROOM + 2 * 10**6
    writer.add("y", torch.ones(500))
    writer.shard.file.flush()
    assert part.stat().st_size == 8 + shards.HEADER_ROOM + 2 * 10**6 + 1000
    writer.close()
    assert read_back(tmp_path)["x"].dtype == torch.bfloat16


def test_a_name_twice_is_an_error(tmp_path: Path) -> None:
    writer = shards.ShardWriter(tmp_path)
    writer.add("x", torch.ones(2))
    with pytest.raises(ValueError, match="written twice"):
        writer.add("x", torch.ones(2))
