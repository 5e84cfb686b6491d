"""kdiff_cli.npz: the stored (uncompressed) ZIP64 writer behind the kernel databases."""

import io
import zipfile

import numpy as np

from kdiff_cli import npz


def test_stored_zip_matches_zipfile_byte_for_byte(tmp_path):
    """Our writer produces exactly what zipfile writes for the same entries (ZIP64 local headers)."""
    arrays = {"kernels": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "meta": np.array('{"a": 1}')}
    npz.write_npz(tmp_path / "ours.npz", arrays)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=npz.ZIP_DATE)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    assert (tmp_path / "ours.npz").read_bytes() == buf.getvalue()
    with np.load(tmp_path / "ours.npz", allow_pickle=False) as f:
        np.testing.assert_array_equal(f["kernels"], arrays["kernels"])
        assert f["meta"].item() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["ours.npz"]


def test_stored_zip_zip64_records_are_readable(tmp_path, monkeypatch):
    """Past the ZIP64 limit (lowered here) sizes and offsets move to ZIP64 fields and records."""
    monkeypatch.setattr(npz.StoredZip, "_LIMIT", 100)
    arrays = {"a": np.arange(300, dtype=np.float64), "b": np.array("meta")}
    npz.write_npz(tmp_path / "big.npz", arrays)
    data = (tmp_path / "big.npz").read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    with zipfile.ZipFile(tmp_path / "big.npz") as zf:
        assert zf.testzip() is None
    with np.load(tmp_path / "big.npz", allow_pickle=False) as f:
        np.testing.assert_array_equal(f["a"], arrays["a"])
        assert f["b"].item() == "meta"
