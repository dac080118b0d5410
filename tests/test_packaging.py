"""Installing vidsift puts one name on the import path, `vidsift`, and the console script works:
a user's own `app` or `models` package neither shadows ours nor is shadowed (issue 18)."""
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = out.glob("vidsift-*.whl")
    return wheel


def test_pip_install_puts_only_vidsift_on_the_import_path_and_the_script_works(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"vidsift", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for expected in ("vidsift/pipeline/store.py", "vidsift/app/cli.py", "vidsift/models/configs/shapes-tiny.json",
                     "vidsift/models/worlds/shapes-tiny.json", "vidsift/pipeline/label_sets/generic.txt"):
        assert expected in names

    # A fresh venv where pip installs the wheel alone (its console script included); the
    # dependencies come from this venv's site-packages (no network here), after it on the path.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True, timeout=600)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", purelib], text=True).strip())
    ours = [p for p in sys.path if "site-packages" in p and Path(p).is_dir() and Path(p).resolve() != REPO]
    (site / "zz-deps.pth").write_text("\n".join(ours) + "\n")
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vidsift = vidsift.app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import importlib.util, vidsift.app.cli, vidsift.pipeline.store\n"
             "print(sorted(n for n in ('app', 'models', 'pipeline', 'workers') if importlib.util.find_spec(n)))\n"
             "print(vidsift.pipeline.store.__file__)")
    found = subprocess.run([str(python), "-c", probe], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    generic, location = found.stdout.splitlines()
    assert generic == "[]" and location.startswith(str(site))
    helped = subprocess.run([str(env_dir / "bin" / "vidsift"), "--help"], cwd=elsewhere, capture_output=True,
                            text=True, timeout=300)
    assert helped.returncode == 0 and "usage: vidsift" in helped.stdout, helped.stderr
