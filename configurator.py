"""configurator.py: the poor man's configurator, after nanoGPT.

Not a module to import: train.py runs it with `exec(open('configurator.py').read())`, so
it reads and writes train.py's globals directly. That keeps configuration to one idea:
every config key is a plain global of train.py, with its default written (and commented)
right there. Usage:

    $ python train.py config/resnet50.py config/lora_r8.py --batch_size=16 --compile=True

- an argument without `--` is a config file: a Python file that sets some of the keys
  (later files win; a config file may `exec` another one to build on it);
- `--key=value` overrides one key. The value goes through `ast.literal_eval`, so
  `--dropout=0.0` is a float and `--lora_targets="('backbone.',)"` a tuple; anything that
  is not a Python literal stays a string (`--backbone=swin_tiny`). It must have the type of
  the default (an int is accepted where a float is expected, and a None default accepts
  anything).

Two additions to nanoGPT's version: an unknown key, in a config file or on the command
line, is an error that names the closest valid keys (a typo such as `--n_layers=3` would
otherwise be silently ignored), and every error is one line on stderr with a non-zero
exit, never a traceback. Names starting with `_` and imported modules in a config file are
its own helpers and are not treated as keys.
"""

import builtins
import sys
import types
from ast import literal_eval
from difflib import get_close_matches

# train.py lists its keys in `config_keys` before exec'ing us; fall back to every simple
# global so that the file also works in a nanoGPT-style script that does not.
_valid = set(globals().get('config_keys') or
             [k for k, v in globals().items() if not k.startswith('_')
              and isinstance(v, (int, float, bool, str, tuple, list, type(None)))])


def _unknown_key(key, where):
    near = get_close_matches(key, sorted(_valid), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(near)}?" if near else "; see the defaults at the top of train.py"
    sys.exit(f"error: unknown config key '{key}' {where}{hint}")


def _coerce(key, value):
    """Check `value` against the type of the current (default) value of `key`."""
    current = globals()[key]
    if current is None or value is None or type(value) == type(current):
        return value
    if isinstance(current, float) and type(value) is int:
        return float(value)  # --learning_rate=1 means 1.0
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(current)(value)  # a list given for a tuple key, or the other way round
    sys.exit(f"error: config key '{key}' expects {type(current).__name__}, "
             f"got {type(value).__name__} {value!r}")


for _arg in sys.argv[1:]:
    if not _arg.startswith('--'):
        # a config file: run it in a namespace seeded with the current values, then copy
        # back what it set, so that unknown names can be caught before they take effect
        try:
            _source = open(_arg).read()
        except OSError as _e:
            sys.exit(f"error: cannot read config file {_arg}: {_e.strerror}")
        print(f"Overriding config with {_arg}:")
        print(_source)
        _ns = {k: globals()[k] for k in _valid}
        _ns['__file__'] = _arg
        try:
            exec(builtins.compile(_source, _arg, 'exec'), _ns)  # (train.py's `compile` is a config key)
        except SystemExit:
            raise
        except Exception as _e:
            sys.exit(f"error: config file {_arg} failed: {type(_e).__name__}: {_e}")
        for _key, _val in _ns.items():
            if _key.startswith('_') or isinstance(_val, types.ModuleType):
                continue
            if _key not in _valid:
                _unknown_key(_key, f"in {_arg}")
            globals()[_key] = _coerce(_key, _val)
    else:
        # --key=value
        if '=' not in _arg:
            sys.exit(f"error: expected --key=value, got {_arg}")
        _key, _val = _arg[2:].split('=', 1)
        if _key not in _valid:
            _unknown_key(_key, "on the command line")
        try:
            _val = literal_eval(_val)
        except (SyntaxError, ValueError):
            pass  # not a Python literal: keep it as a string
        _val = _coerce(_key, _val)
        print(f"Overriding: {_key} = {_val!r}")
        globals()[_key] = _val
