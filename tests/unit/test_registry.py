def test_a_registry_imports_its_provider_when_first_asked(tmp_path, monkeypatch):
    """A lower layer looks up what a higher one registers: the provider is imported on the first question."""
    (tmp_path / "provider_pkg.py").write_text(
        "from tuneforge.registry import Registry\n"
        "import registry_home\n"
        "registry_home.THINGS.register('alpha')(1)\n"
        "registry_home.THINGS.register('beta')(2)\n"
    )
    (tmp_path / "registry_home.py").write_text(
        "from tuneforge.registry import Registry\nTHINGS = Registry('thing', provider='provider_pkg')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import registry_home

    assert registry_home.THINGS.names() == ["alpha", "beta"] and registry_home.THINGS.get("beta") == 2


def test_a_config_loads_without_importing_the_methods_first(tmp_path):
    """The Python API: load_config alone (a notebook, a script) finds the adapters and methods."""
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text("model: {name_or_path: m}\nadapter: {name: lora, r: 4}\nmethod: {name: dpo, beta: 0.2}\n")
    code = (
        "import sys; from tuneforge.config.load import load_config; c = load_config(sys.argv[1]); "
        "print(c.adapter.name, c.adapter.r, c.method.name, c.method.beta)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, check=False)
    assert result.stdout.split() == ["lora", "4", "dpo", "0.2"], result.stderr[-2000:]
