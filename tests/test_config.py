"""tests/test_config.py: configurator.py in process (types, errors, "did you mean"), and every
config/*.py resolved through the configurator and checked with train.py's own checks: the files a user
layers on train.py's defaults (moved out of tests/test_train.py, which runs train.py end to end).
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# configurator.py, in process: exec it the way train.py does, on a small set of defaults

DEFAULTS = dict(out_dir='out', batch_size=8, learning_rate=3e-4, backbone='resnet50', compile=False,
                lora_targets=('backbone.',), pretrained=None, n_layer=6)


def configure(argv, monkeypatch):
    g = dict(DEFAULTS, config_keys=list(DEFAULTS))
    monkeypatch.setattr(sys, 'argv', ['train.py', *argv])
    exec(open(os.path.join(ROOT, 'configurator.py')).read(), g)
    return {k: g[k] for k in DEFAULTS}


def test_configurator_overrides_with_types(tmp_path, monkeypatch):
    base = tmp_path / 'base.py'
    base.write_text("backbone = 'swin_tiny'\nbatch_size = 4\n_helper = 3  # private names are not keys\n")
    over = tmp_path / 'over.py'
    over.write_text("out_dir = out_dir + '-lora'  # sees earlier values\nbatch_size = 2 * batch_size\n")
    cfg = configure([str(base), str(over), '--learning_rate=1', '--lora_targets=["blocks."]', '--pretrained=timm',
                     '--compile=True', '--n_layer=3'], monkeypatch)
    assert cfg == dict(out_dir='out-lora', batch_size=8, learning_rate=1.0, backbone='swin_tiny', compile=True,
                       lora_targets=('blocks.',), pretrained='timm', n_layer=3)
    assert type(cfg['learning_rate']) is float and type(cfg['lora_targets']) is tuple


@pytest.mark.parametrize('argv, message', [
    (['--n_layers=3'], "unknown config key 'n_layers' on the command line; did you mean n_layer?"),
    (['--batch_size=2.5'], "config key 'batch_size' expects int, got float 2.5"),
    (['--compile'], "expected --key=value, got --compile"),
])
def test_configurator_errors(argv, message, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        configure(argv, monkeypatch)
    assert e.value.code == f"error: {message}"


def test_configurator_unknown_key_in_config_file(tmp_path, monkeypatch):
    bad = tmp_path / 'bad.py'
    bad.write_text("learning_rat = 1e-3\n")
    with pytest.raises(SystemExit) as e:
        configure([str(bad)], monkeypatch)
    assert e.value.code == f"error: unknown config key 'learning_rat' in {bad}; did you mean learning_rate?"


def train_defaults():
    """train.py's config keys and defaults: the block between its two markers, executed on its own."""
    src = open(os.path.join(ROOT, 'train.py')).read()
    g = {'torch': torch}
    exec(src[src.index('# default config values'):src.index('config_keys = ')], g)
    return {k: v for k, v in g.items() if not k.startswith('_') and k != 'torch'}


BACKBONE_CONFIGS = ['resnet50', 'efficientnet_b0', 'convnext_tiny', 'vit_small', 'deit_small', 'swin_tiny',
                    'mobilevit_small']
ADD_ON_CONFIGS = ['lora_r4', 'lora_r8', 'lora_r16', 'qlora_r8', 'frozen_backbone']  # after a backbone config
CONFIG_RUNS = [[f'config/{b}.py'] for b in BACKBONE_CONFIGS] + [
    ['config/resnet50.py', 'config/lora_r8.py'], ['config/resnet50.py', 'config/lora_r4.py'],
    ['config/vit_small.py', 'config/lora_r16.py'], ['config/convnext_tiny.py', 'config/qlora_r8.py'],
    ['config/swin_tiny.py', 'config/frozen_backbone.py'], ['config/quickstart.py'], ['config/tiny_test.py'],
    ['config/reader.py'], ['config/reader_all.py'], ['config/reader_pages.py'], ['config/poly.py'], ['config/distill_convnext_to_mobilevit.py']]


def configured(files, monkeypatch):
    """train.py's config after config files `files` (its defaults, then configurator.py), as a dict."""
    defaults = train_defaults()
    g = dict(defaults, config_keys=list(defaults))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, 'argv', ['train.py', *files])
    exec(open(os.path.join(ROOT, 'configurator.py')).read(), g)
    return g


def train_checks(g):
    """The error lines train.py's own cheap checks give for config g (its block before the data loads)."""
    src = open(os.path.join(ROOT, 'train.py')).read()
    errors = []
    exec(src[src.index('# cheap checks first'):src.index("if init_from == 'auto':")], dict(g, die=errors.append))
    return errors


def test_every_config_file_is_covered():
    have = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'config')) if f.endswith('.py'))
    runs = {os.path.basename(f)[:-3] for files in CONFIG_RUNS for f in files}
    assert sorted(runs) == have  # a new config file needs a line in CONFIG_RUNS


@pytest.mark.parametrize('files', CONFIG_RUNS, ids=lambda fs: '+'.join(os.path.basename(f)[:-3] for f in fs))
def test_every_config_file_is_valid(files, monkeypatch):
    """Each config (an add-on after a backbone config) parses with configurator.py, passes train.py's
    checks, names a known backbone and a model that can be built from its keys, and keeps its promises."""
    import backbones
    from model import MusicTrOCRConfig
    g = configured(files, monkeypatch)
    assert train_checks(g) == []
    assert g['backbone'] in backbones.BACKBONES and g['img_height'] % 16 == 0 and g['max_width'] >= g['img_height']
    keys = ('backbone', 'n_layer', 'n_head', 'd_model', 'd_ff', 'max_seq_len', 'dropout', 'img_height',
            'collapse_height', 'ctc_weight', 'label_smoothing')
    MusicTrOCRConfig(vocab_size=512, **{k: g[k] for k in keys})  # the model keys are the model's
    assert g['d_model'] % g['n_head'] == 0
    name = os.path.basename(files[0])[:-3]
    if name in BACKBONE_CONFIGS:  # the seed recipe at 224 px: 8 x 4 = 32 images per step, AdamW 3e-4
        assert (g['backbone'], g['img_height'], g['batch_size'] * g['gradient_accumulation_steps']) == (name, 224, 32)
        assert (g['learning_rate'], g['beta1'], g['beta2'], g['weight_decay']) == (3e-4, 0.9, 0.99, 0.01)
    if len(files) == 2:  # an add-on config extends the backbone config's out_dir
        suffix = os.path.basename(files[1])[:-3].replace('frozen_backbone', 'frozen')
        assert os.path.basename(files[1])[:-3] in ADD_ON_CONFIGS and g['out_dir'] == f'out-{name}-{suffix}'
    if g['quant_backbone']:  # QLoRA: the 4-bit backbone trains through adapters only
        assert g['lora_rank'] > 0 and any(t.startswith('backbone') for t in g['lora_targets'])
    if name == 'reader_all':  # stage 2 starts from stage 1's run: the same model, so its weights load
        stage1 = configured(['config/reader.py'], monkeypatch)
        assert g['init_weights'] == stage1['out_dir'] and all(g[k] == stage1[k] for k in keys)
    if name == 'reader_pages':  # stage 3 starts from stage 2's run, same data, and adds page text to the scans
        stage2 = configured(['config/reader_all.py'], monkeypatch)
        assert g['init_weights'] == stage2['out_dir'] and all(g[k] == stage2[k] for k in (*keys, 'data_dir'))
        assert 0 < g['augment_clutter'] <= 1 and g['augment_scan'] == stage2['augment_scan']
    if name in ('reader', 'reader_all', 'reader_pages', 'poly', 'quickstart'):  # the CPU recipes: one step is the whole global batch
        assert g['device'] == 'cpu' and g['gradient_accumulation_steps'] == 1 and g['cache_images']
    if name == 'quickstart':  # the README's one command prepares its own corpus
        assert g['prepare_args'] and g['data_dir'] == 'data/m21/quick' and g['max_time_minutes'] > 0
    if name == 'distill_convnext_to_mobilevit':  # the teacher is what config/convnext_tiny.py trains, on the same data
        teacher = configured(['config/convnext_tiny.py'], monkeypatch)
        assert g['teacher_dir'] == teacher['out_dir'] and g['data_dir'] == teacher['data_dir']
        assert g['backbone'] == 'mobilevit_small' and 0 <= g['distill_alpha'] <= 1 and g['distill_T'] > 0


def test_configurator_missing_config_file(monkeypatch):
    with pytest.raises(SystemExit) as e:
        configure(['config/no_such_config.py'], monkeypatch)
    assert e.value.code == "error: cannot read config file config/no_such_config.py: No such file or directory"
