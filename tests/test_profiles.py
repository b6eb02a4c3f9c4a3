"""Profiles: every shipped file loads; detection from files recorded on real boards; refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import profiles as pm
from edgekit.errors import UsageError

SHIPPED = {"jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nano", "jetson-orin-nx",
           "jetson-orin-nx-8gb",
           "jetson-agx-orin", "jetson-agx-thor", "desktop-turing", "desktop-ampere", "desktop-ada",
           "desktop-blackwell", "datacenter-ampere", "datacenter-hopper", "cpu"}

# /proc/device-tree/model, /proc/device-tree/compatible (NUL-separated) and the first line of
# /etc/nv_tegra_release as read on real boards (sources: NVIDIA/jetson-gpio, jetson-containers,
# upstream kernel device trees, user reports quoted in the profiles' sources).
BOARDS = {
    "jetson-nano": ("NVIDIA Jetson Nano Developer Kit", "nvidia,p3449-0000-b00+p3448-0000-b00\0nvidia,jetson-nano\0"
                    "nvidia,tegra210", "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64"),
    "jetson-tx2": ("quill", "nvidia,quill\0nvidia,tegra186", "# R32 (release), REVISION: 7.1, GCID: 29818004, "
                   "BOARD: t186ref, EABI: aarch64"),
    "jetson-xavier-nx": ("NVIDIA Jetson Xavier NX Developer Kit", "nvidia,p3509-0000+p3668-0001\0nvidia,tegra194",
                         "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64"),
    "jetson-agx-xavier": ("Jetson-AGX", "nvidia,p2972-0000\0nvidia,tegra194",
                          "# R35 (release), REVISION: 2.1, GCID: 32398013, BOARD: t186ref, EABI: aarch64"),
    "jetson-orin-nano": ("NVIDIA Jetson Orin Nano Developer Kit",
                         "nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234",
                         "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64"),
    "jetson-orin-nx": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                       "nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234",
                       "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64"),
    "jetson-orin-nx-8gb": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                           "nvidia,p3768-0000+p3767-0001\0nvidia,p3767-0001\0nvidia,tegra234",
                           "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64"),
    "jetson-agx-orin": ("Jetson AGX Orin", "nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0"
                        "nvidia,tegra23x", "# R35 (release), REVISION: 2.1, GCID: 32398013, BOARD: t186ref"),
    "jetson-agx-thor": ("NVIDIA Jetson AGX Thor Developer Kit", "nvidia,p4071-0000+p3834-0008\0nvidia,p3834-0008\0"
                        "nvidia,tegra264", "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic"),
}


def _board(root: Path, model: str, compatible: str, release: str) -> Path:
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    (root / "proc" / "device-tree" / "compatible").write_bytes(compatible.encode() + b"\0")
    (root / "etc" / "nv_tegra_release").write_text(release + "\n")
    return root


def test_every_shipped_profile_loads_with_sources():
    found = {p.name: p for p in pm.all_profiles()}
    assert set(found) >= SHIPPED
    for p in found.values():
        assert p.sources and p.description and p.default_precision in p.fast_precisions
        assert Path(p.path).name == f"{p.name}.yaml"


def test_facts_that_users_trip_over():
    g = pm.get
    assert "int8" not in g("jetson-nano").fast_precisions and "int8" not in g("jetson-tx2").fast_precisions
    assert g("jetson-orin-nano").dla_cores == 0 and g("jetson-agx-thor").dla_cores == 0
    assert g("jetson-xavier-nx").dla_cores == 2 and g("jetson-agx-xavier").dla_cores == 2
    assert g("jetson-agx-orin").dla_cores == 2
    assert g("jetson-agx-orin").compute_capability == ("8.7",) and g("jetson-nano").compute_capability == ("5.3",)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_detection_from_recorded_board_files(tmp_path, name):
    root = _board(tmp_path, *BOARDS[name])
    dev = pm.read_device(root)
    assert dev.is_jetson and dev.l4t
    assert pm.match(dev).name == name


def test_detection_by_model_string_alone(tmp_path):
    root = tmp_path
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\0")
    assert pm.match(pm.read_device(root)).name == "jetson-xavier-nx"


@pytest.mark.parametrize("gpu,cc,name", [
    ("NVIDIA GeForce RTX 4090", "8.9", "desktop-ada"),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "8.6", "desktop-ampere"),
    ("Tesla T4", "7.5", "desktop-turing"),
    ("NVIDIA H100 80GB HBM3", "9.0", "datacenter-hopper"),
    ("NVIDIA A100-SXM4-40GB", "8.0", "datacenter-ampere"),
    ("NVIDIA GeForce RTX 5080", "12.0", "desktop-blackwell"),
    ("Some Future GPU", "8.9", "desktop-ada"),  # unknown name: compute capability decides
])
def test_detection_from_gpu_name_and_compute_capability(tmp_path, gpu, cc, name):
    assert pm.match(pm.read_device(tmp_path, gpu=(gpu, cc))).name == name


def test_no_gpu_is_cpu(tmp_path):
    assert pm.match(pm.read_device(tmp_path, gpu=("", ""))).name == "cpu"


@pytest.mark.parametrize("profile,kwargs,match", [
    ("jetson-nano", {"precision": "int8"}, r"no fast INT8 on Maxwell \(sm_53\): use --fp16"),
    ("jetson-tx2", {"precision": "int8"}, r"no fast INT8 on Pascal \(sm_62\): use --fp16"),
    ("jetson-orin-nano", {"precision": "int8", "dla": 0}, "has no DLA"),
    ("jetson-agx-orin", {"precision": "int8", "dla": 2}, "DLA cores 0-1; --dla 2 does not exist"),
    ("jetson-nano", {"precision": "fp16", "batch": pm.Batch(1, 8, 8)}, "beyond the profile's largest"),
    ("jetson-nano", {"precision": "fp16", "workspace_mib": 4096}, "workspace 4096 MiB is beyond"),
])
def test_refusals_say_the_fix(profile, kwargs, match):
    with pytest.raises(UsageError, match=match):
        pm.check_request(pm.get(profile), **kwargs)


def test_user_profile_extends_a_shipped_one(tmp_path):
    f = tmp_path / "my-orin-nx-8gb.yaml"
    f.write_text("extends: jetson-orin-nx\nname: my-orin-nx-8gb\ndla_cores: 1\nbuild: {workspace_mib: 512}\n")
    p = pm.get(str(f))
    assert p.name == "my-orin-nx-8gb" and p.dla_cores == 1 and p.workspace_mib == 512
    assert p.batch == pm.get("jetson-orin-nx").batch  # inherited
    with pytest.raises(UsageError, match="DLA cores 0-0"):
        pm.check_request(p, "int8", dla=1)


def test_user_profile_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_PROFILES", str(tmp_path))
    (tmp_path / "lab-rig.yaml").write_text("extends: desktop-ada\nname: lab-rig\ndescription: our RTX 4070 rig\n")
    assert "lab-rig" in {p.name for p in pm.all_profiles()}
    assert pm.get("lab-rig").kind == "desktop"


@pytest.mark.parametrize("body,match", [
    ("name: x\ndescription: y\nkind: robot\n", "key 'kind' must be one of"),
    ("extends: jetson-nano\nname: x\nprecisions: {fast: [fp16], default: int8}\n", "key 'precisions.default'"),
    ("extends: jetson-nano\nname: x\nbuild: {batch: {min: 4, opt: 2, max: 8}}\n", "key 'build.batch'"),
    ("extends: jetson-nano\nname: x\ndla_cores: 3\n", "key 'dla_cores' must be 0, 1 or 2"),
    ("extends: jetson-nano\nname: x\nwheels: 4\n", "key 'wheels' is not a profile key"),
    ("extends: jetson-nano\nname: x\ncompute_capability: [sm87]\n", r"key 'compute_capability\[0\]'"),
    ("extends: nope\nname: x\n", "unknown profile 'nope'"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_invalid_profiles_name_file_and_key(tmp_path, body, match):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(UsageError, match=match) as e:
        pm.get(str(f))
    assert "bad.yaml" in str(e.value)


def test_unknown_profile_lists_names():
    with pytest.raises(UsageError, match="unknown profile 'jetson-orin'.*jetson-orin-nano"):
        pm.get("jetson-orin")


def test_orin_nx_8gb_has_one_dla_core_and_16gb_two():
    assert pm.get("jetson-orin-nx-8gb").dla_cores == 1 and pm.get("jetson-orin-nx").dla_cores == 2
    with pytest.raises(UsageError, match="DLA cores 0-0; --dla 1 does not exist"):
        pm.check_request(pm.get("jetson-orin-nx-8gb"), "int8", dla=1)


def test_dla_takes_static_shapes_and_no_fp32():
    orin = pm.get("jetson-agx-orin")
    with pytest.raises(UsageError, match="DLA has no FP32"):
        pm.check_request(orin, "fp32", dla=0)
    with pytest.raises(UsageError, match="one static batch size.*--batch N"):
        pm.check_request(orin, "int8", dla=0, batch=pm.Batch(1, 4, 8))
    pm.check_request(orin, "int8", dla=0, batch=pm.Batch(2, 2, 2))
    pm.check_request(orin, "fp16", dla=1)


def test_engine_records_this_gpus_compute_capability():
    """A GB10 (12.1) builds for itself, not for desktop-blackwell's first entry (12.0), so its engine
    matches it next time instead of being rebuilt at every start."""
    blackwell = pm.get("desktop-blackwell")
    gb10 = pm.Device(gpu_name="NVIDIA GB10", compute_capability="12.1")
    assert pm.target_compute_capability(blackwell, gb10) == "12.1"
    assert pm.target_compute_capability(blackwell, pm.Device()) == "12.0"  # ahead of time, no GPU here
    assert pm.target_compute_capability(pm.get("jetson-orin-nano"), pm.Device(compute_capability="8.7")) == "8.7"


def test_no_profile_sets_a_csi_sensor_mode():
    """Sensor modes are the camera module's (IMX219 mode 0 is 3264x2464 at 21 fps, IMX477's differ),
    not the board's: a board's mode 0 at 1080p30 fails caps negotiation on an IMX219. The user
    sets one (edgekit run --sensor-mode); a user profile may too."""
    for p in pm.all_profiles():
        assert p.camera.sensor_mode is None, p.name
