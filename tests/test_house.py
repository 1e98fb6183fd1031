"""
tests/test_house.py: the layout the README promises ("Files"), measured by bench/house.py: the design
card's files on top, the rest in folders with no import circle between modules or folders, imports at
the top of each file but for optional or slow packages, few sys.path hacks, short files, a short
README, an MIT LICENSE, and results/ holding outputs only.
"""
import os

from bench import house

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARD = {'model.py', 'backbones.py', 'data.py', 'train.py', 'lora.py', 'distill.py', 'quant.py', 'bench_vram.py',
        'sample.py', 'configurator.py'}


def test_top_level_is_the_design_card():
    top = {f for f in os.listdir(ROOT) if f.endswith('.py')}
    assert CARD <= top and len(top) <= 12, sorted(top - CARD)


def test_no_import_circle_between_modules_or_folders():
    edges = house.import_graph(ROOT)
    assert 'model' in edges and 'training.checkpoint' in edges['inference.pages']  # the graph sees real imports
    assert house.cycles(edges) == []
    folded = house.folded(edges)
    assert 'core/' in folded['model'] and folded['core/'] == set()  # core/ stands on nothing of the project
    assert house.cycles(folded) == []


def test_cycles_finds_a_circle():
    assert house.cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_imports_inside_functions_are_optional_or_slow_packages_only():
    inner = house.inner_imports(ROOT)
    assert len(inner) > 10  # matplotlib, datasets, music21 ... are found
    assert [i for i in inner if i[2] not in house.HEAVY] == []


def test_few_path_hacks_short_files_short_readme_license():
    assert len(house.path_hacks(ROOT)) <= 4
    n = house.lengths(ROOT)
    assert n['model.py'] <= 500 and n['train.py'] <= 500
    assert {f: k for f, k in n.items() if k > 550} == {'backbones.py': n['backbones.py']}
    with open(os.path.join(ROOT, 'README.md')) as f:
        assert sum(1 for _ in f) <= 300
    with open(os.path.join(ROOT, 'LICENSE')) as f:
        assert f.readline().strip() == 'MIT License'


def test_results_hold_outputs_only():
    code = [os.path.join(dp, f) for dp, _, fn in os.walk(os.path.join(ROOT, 'results')) for f in fn
            if f.endswith(('.py', '.sh'))]
    assert code == []
