"""The node's parameter schema without ROS: validation, parameter files, the shipped YAML and the
launch file's defaults."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgdfuse_ros import params
from sgdfuse_ros.params import ParameterError, load_node_params, validate_settings
from sgdfuse_ros.runtime.backends import BACKEND_NAMES

REPO = Path(__file__).resolve().parents[1]


def test_schema_is_complete_and_defaults_are_valid():
    names = [p.name for p in params.PARAMETERS]
    assert len(names) == len(set(names))
    s = validate_settings({})
    assert s.as_dict() == {n: (tuple(d) if isinstance(d, (list, tuple)) else d)
                           for n, d in params.DEFAULTS.items()}
    assert (s.thermal_topic, s.rgb_topic, s.fused_topic) == (
        '/thermal/image_raw', '/rgb/image_raw', '/fused/image_raw')
    assert s.qos_reliability == 'best_effort' and s.homography == () and s.threads == 0
    assert params.BACKENDS == ('auto', *BACKEND_NAMES)
    for p in params.PARAMETERS:  # the node declares this text for every parameter
        text = params.describe(p)
        assert text.startswith(p.description)
        assert text.endswith('Can change at run time.' if p.dynamic else 'Read at start.')
        if p.choices:
            assert ', '.join(p.choices) in text


def test_shipped_yaml_is_the_schema_at_its_defaults():
    text = (REPO / 'config' / 'sgdfuse.yaml').read_text()
    assert text == params.defaults_yaml(), ('config/sgdfuse.yaml is out of date: '
                                            'python -m sgdfuse_ros.params > config/sgdfuse.yaml')
    doc = yaml.safe_load(text)['/**']['ros__parameters']
    assert list(doc) == [p.name for p in sorted(
        params.PARAMETERS, key=lambda p: list(params.GROUPS).index(p.group))]
    assert validate_settings(doc) == validate_settings({})
    assert 'backend: auto' in text and '# auto | ' + ' | '.join(BACKEND_NAMES) in text


def test_invalid_settings_are_all_reported_on_one_line():
    with pytest.raises(ParameterError) as err:
        validate_settings({'sync_slop': -0.1, 'qos_reliability': 'sometimes', 'qos_depth': 0,
                           'work_width': 640, 'output_encoding': 'bgr8',
                           'thermal_low_percentile': 99.5, 'homography': [1.0, 2.0],
                           'thermal_timeout': 0.0, 'backend': 'cuda', 'threads': -1})
    text = str(err.value)
    assert '\n' not in text
    for name in ('sync_slop', 'qos_reliability', 'qos_depth', 'work_width', 'output_encoding',
                 'thermal_low_percentile', 'homography', 'thermal_timeout', 'threads'):
        assert name in text
    assert 'sync_slop must be > 0 s, got -0.1' in text
    assert 'backend must be one of auto, ' + ', '.join(BACKEND_NAMES) + ", got 'cuda'" in text
    assert 'thermal_smoothing' not in text  # only what is wrong
    with pytest.raises(ParameterError, match=r"sync_queue_size: expected an integer, got 'ten'"):
        validate_settings({'sync_queue_size': 'ten'})
    with pytest.raises(ParameterError, match='unknown parameter .slop.'):
        validate_settings({'slop': 0.1})
    with pytest.raises(ParameterError, match='homography is invalid: .*singular'):
        validate_settings({'homography': [0.0] * 9})
    with pytest.raises(ParameterError, match='mask_input_size must be 0'):
        validate_settings({'mask_input_size': 100})
    with pytest.raises(ParameterError, match='thermal_topic, rgb_topic and fused_topic must '
                       'differ'):
        validate_settings({'fused_topic': '/rgb/image_raw'})
    ident = validate_settings({'homography': [2.0, 0, 0, 0, 2.0, 0, 0, 0, 2.0]})
    assert ident.homography == ()  # a scaled identity means "already registered"
    shifted = validate_settings({'homography': [1, 0, 5, 0, 1, 0, 0, 0, 1], 'sync_slop': 1})
    assert shifted.homography[2] == 5.0 and shifted.sync_slop == 1.0
    from sgdfuse_ros.core.matching import message_filters_available

    if not message_filters_available():
        with pytest.raises(ParameterError, match='message_filters is not installed'):
            validate_settings({'sync_backend': 'message_filters'})


def test_settings_map_onto_the_pipeline_config():
    assert validate_settings({}).pipeline_config().method_options == {}
    s = validate_settings({'method': 'stage1', 'backend': 'onnxruntime', 'weights': 'w.pt',
                           'engine_dir': '/engines', 'refiner_steps': 2,
                           'mask_checkpoint': 'sam.pth', 'mask_input_size': 384,
                           'work_width': 320, 'work_height': 240, 'output_encoding': 'mono8',
                           'homography': [1, 0, 4, 0, 1, -2, 0, 0, 1], 'mask_max_age': 0.0})
    cfg = s.pipeline_config()
    assert cfg.method == 'stage1' and cfg.work_size == (320, 240) and cfg.output == 'mono'
    assert cfg.method_options == {'backend': 'onnxruntime', 'weights': 'w.pt',
                                  'engines_dir': '/engines', 'steps': 2}
    assert cfg.mask_options == {'checkpoint': 'sam.pth', 'input_size': 384}
    assert cfg.homography.shape == (3, 3) and cfg.homography[1, 2] == -2.0
    assert s.mask_max_age_s is None and validate_settings({'mask_max_age': 3}).mask_max_age_s == 3


def test_only_run_time_parameters_change_while_running():
    s = validate_settings({})
    assert {p.name for p in params.PARAMETERS if p.dynamic} == {
        'thermal_timeout', 'mask_rate', 'max_latency', 'refiner_steps', 'output_encoding',
        'thermal_nonfinite'}
    changed = params.update_settings(s, {'thermal_timeout': 2.5, 'use_sim_time': True,
                                         'max_latency': 0, 'output_encoding': 'mono8'})
    assert changed.thermal_timeout == 2.5 and changed.sync_slop == s.sync_slop
    assert changed.max_latency == 0.0 and changed.output_encoding == 'mono8'
    with pytest.raises(ParameterError, match='thermal_timeout must be > 0 s'):
        params.update_settings(s, {'thermal_timeout': -1.0})
    with pytest.raises(ParameterError, match='max_latency must be >= 0 s'):
        params.update_settings(s, {'max_latency': -0.1})
    with pytest.raises(ParameterError, match='thermal_nonfinite must be one of replace, reject'):
        params.update_settings(s, {'thermal_nonfinite': 'zero'})
    with pytest.raises(ParameterError, match='sync_slop cannot change while the node runs'):
        params.update_settings(s, {'sync_slop': 0.1})


def test_parameter_files_ros_and_plain(tmp_path):
    ros = tmp_path / 'ros.yaml'
    ros.write_text('/**:\n  ros__parameters:\n    sync_slop: 0.1\n    method: mean\n'
                   'sgdfuse:\n  ros__parameters:\n    method: max\n'
                   'other_node:\n  ros__parameters:\n    method: laplacian\n'
                   '/cams:\n  sgdfuse:\n    ros__parameters:\n      qos_depth: 3\n')
    assert load_node_params(ros) == {'sync_slop': 0.1, 'method': 'max'}
    assert load_node_params(ros, node='/cams/sgdfuse') == {'sync_slop': 0.1, 'method': 'mean',
                                                           'qos_depth': 3}
    plain = tmp_path / 'plain.yaml'
    plain.write_text('method: laplacian\nhomography: []\n')
    assert load_node_params(ros, plain) == {'sync_slop': 0.1, 'method': 'laplacian',
                                            'homography': []}
    wild = tmp_path / 'wild.yaml'
    wild.write_text('/**/sgdfuse:\n  ros__parameters:\n    qos_depth: 7\n')
    assert load_node_params(wild, node='/a/b/sgdfuse') == {'qos_depth': 7}
    for text, why in (('[1, 2]\n', 'not a parameter file'),
                      ('node:\n  other: {x: 1}\n', 'no ros__parameters section'),
                      ('a: [1\n', 'cannot read')):
        bad = tmp_path / 'bad.yaml'
        bad.write_text(text)
        with pytest.raises(ValueError, match=why):
            load_node_params(bad)
    with pytest.raises(ValueError, match='cannot read'):
        load_node_params(tmp_path / 'missing.yaml')


def test_written_parameter_files_read_back(tmp_path):
    hom = [2.0, 0.0, 0.5, 0.0, 1.875, 0.4375, 0.0, 0.0, 1.0]
    values = {'thermal_topic': '/flir/image', 'method': 'true', 'publish_masks': True,
              'mask_rate': 5, 'homography': hom, 'weights': ''}
    path = tmp_path / 'p.yaml'
    path.write_text(params.node_params_yaml(values, comments=['made by a test']))
    assert path.read_text().startswith('# made by a test\n/**:\n  ros__parameters:\n')
    back = load_node_params(path)
    assert back == {**values, 'mask_rate': 5.0}  # 'true' stays a string, 5 becomes 5.0
    assert np.allclose(validate_settings(back).homography, hom)
    with pytest.raises(ParameterError, match='unknown parameter'):
        params.node_params_yaml({'slop': 1.0})


def test_launch_file_takes_the_schema_defaults_and_points_at_real_files():
    path = REPO / 'launch' / 'sgdfuse.launch.py'
    spec = importlib.util.spec_from_file_location('sgdfuse_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need launch / launch_ros
    for f in (module.DEFAULT_PARAMS, module.DEFAULT_DDS_PROFILE, module.DEFAULT_RVIZ):
        assert Path(f).is_file(), f
    assert module.DEFAULT_TOPICS == {'thermal_topic': '/thermal/image_raw',
                                     'rgb_topic': '/rgb/image_raw',
                                     'fused_topic': '/fused/image_raw'}
    # managed:=false / true start the package's two node executables, whose mains exist
    setup = (REPO / 'setup.py').read_text()
    for executable, module_name in zip(module.EXECUTABLES.values(), ('node', 'lifecycle')):
        assert f"'{executable} = sgdfuse_ros.ros.{module_name}:main'" in setup, executable
        path = REPO / 'sgdfuse_ros' / 'ros' / f'{module_name}.py'
        assert '\ndef main(args=None) -> int:' in path.read_text()
    try:
        import launch_ros  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            module.generate_launch_description()
    else:
        names = {getattr(e, 'name', None) for e in module.generate_launch_description().entities}
        assert {'params_file', 'use_sim_time', 'thermal_topic', 'rgb_topic'} <= names


def test_run_time_numbers_have_documented_upper_bounds():
    """Every number that changes while the node runs has an upper bound, stated in its
    description's range; values past it are refused with the bound."""
    for p in params.PARAMETERS:
        if p.dynamic and p.kind in ('int', 'float'):
            assert p.high is not None, p.name
            assert f'{p.high:g}' in p.range_text(), p.name
    s = validate_settings({})
    for name, value, why in (('refiner_steps', 250, 'refiner_steps must be <= 16, got 250'),
                             ('mask_rate', 1e308, 'mask_rate must be <= 60 Hz'),
                             ('max_latency', 1e9, 'max_latency must be <= 60 s'),
                             ('thermal_timeout', 1e308, 'thermal_timeout must be <= 3600 s')):
        with pytest.raises(ParameterError, match=why):
            params.update_settings(s, {name: value})
    assert params.update_settings(s, {'refiner_steps': 16, 'mask_rate': 60.0}).refiner_steps == 16
