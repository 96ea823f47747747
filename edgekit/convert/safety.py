"""What a model file may contain before edgekit deserializes it: an allowlist.

Loading a Keras model is running a program that the file describes. Keras 3's ``safe_mode`` refuses
``Lambda`` bytecode, but edgekit also loads Keras 2 files through tf_keras, which has no safe mode: a
``TFOpLambda`` layer names any TensorFlow function (``io.write_file``, ``py_function``...) and tf_keras
calls it, with arguments from the file, while it rebuilds the model. So every model config is walked
here, before Keras or tf_keras sees it, and refused unless each object in it is known to be safe:

* **Layers and other Keras objects** (initializers, regularizers, constraints, dtype policies) by class
  name, from ``SAFE_CLASSES``. ``Lambda``, ``TFSMLayer`` (loads another SavedModel), ``TorchModuleWrapper``
  (pickle) and every custom or unknown class are refused.
* **Keras 2 TF-op layers** (``TFOpLambda``, ``SlicingOpLambda``): course models are full of them
  (``x / 127.5 - 1`` in a functional model becomes ``math.truediv`` and ``math.subtract``), so the
  function each one names is checked instead: pure tensor maths (``math.*``, ``nn.*``, ``linalg.*``,
  Python operators, reshapes, slicing, ``image.resize``...) is allowed; ``io.*``, ``py_function``,
  ``numpy_function``, ``print``, ``debugging.*``, ``summary.*``, strings, files and everything else is not.
* **Keras 3 symbolic ops** (``keras.src.ops.numpy.TrueDivide``...): the pure op modules only.
* **Functions** (Keras 3 serializes activations as ``{"class_name": "function"}``): Keras' activations only.
* **SavedModel graphs**: no Python code can be stored in one, but TensorFlow ops can write files or print.
  Every op that any function can run is checked: stateless ops are pure, except those that read files;
  stateful ops must be on ``SAFE_STATEFUL_OPS`` (variables, tables, random numbers, control flow). The
  save function that every SavedModel carries (it writes checkpoints, and only runs when the model is
  saved again) is exempt, unless anything else calls it.

``--unsafe`` skips all of this: then the file runs whatever it holds, as Keras itself would.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import InputFileError


class UnsafeModelError(InputFileError):
    """The model holds code or operations outside the allowlist, and ``--unsafe`` was not given."""


_UNSAFE_HINT = "refused for safety: pass --unsafe only if you trust where this file came from"

# ---- Keras classes --------------------------------------------------------------------------------------
_LAYERS = """
InputLayer Input Sequential Functional Model
Dense EinsumDense Embedding Identity Masking Activation
Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose DepthwiseConv1D DepthwiseConv2D
SeparableConv1D SeparableConv2D Convolution1D Convolution2D Convolution3D Convolution2DTranspose
SeparableConvolution1D SeparableConvolution2D
MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D
MaxPool1D MaxPool2D MaxPool3D AvgPool1D AvgPool2D AvgPool3D
GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D
GlobalMaxPooling3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D
BatchNormalization LayerNormalization GroupNormalization UnitNormalization SyncBatchNormalization
Normalization Rescaling Resizing CenterCrop
Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianDropout GaussianNoise AlphaDropout
ActivityRegularization
ReLU LeakyReLU PReLU ELU Softmax ThresholdedReLU
Flatten Reshape Permute RepeatVector Cropping1D Cropping2D Cropping3D UpSampling1D UpSampling2D UpSampling3D
ZeroPadding1D ZeroPadding2D ZeroPadding3D
Add Subtract Multiply Average Maximum Minimum Concatenate Dot
RandomFlip RandomRotation RandomZoom RandomTranslation RandomContrast RandomBrightness RandomCrop
RandomHeight RandomWidth
SimpleRNN GRU LSTM SimpleRNNCell GRUCell LSTMCell Bidirectional TimeDistributed ConvLSTM2D
Attention AdditiveAttention MultiHeadAttention
TFOpLambda SlicingOpLambda
"""
_OTHER_OBJECTS = """
Zeros Ones Constant RandomNormal RandomUniform TruncatedNormal VarianceScaling Orthogonal Identity IdentityInitializer
GlorotNormal GlorotUniform HeNormal HeUniform LecunNormal LecunUniform
L1 L2 L1L2 OrthogonalRegularizer
MaxNorm MinMaxNorm NonNeg UnitNorm RadialConstraint
DTypePolicy Policy FloatDTypePolicy QuantizedDTypePolicy QuantizedFloat8DTypePolicy
"""
# Keras 3's serialization of tensors and values inside a functional config.
_VALUE_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__typespec__",
                            "__ellipsis__", "__slice__", "__tuple__", "__set__"})
SAFE_CLASSES = frozenset((_LAYERS + _OTHER_OBJECTS).split())

# Keras 3 functional models store symbolic ops as Operation classes from these modules: pure tensor maths.
SAFE_OP_MODULES = frozenset({"keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.math",
                             "keras.src.ops.image", "keras.ops.numpy", "keras.ops.nn", "keras.ops.math",
                             "keras.ops.image", "keras.ops"})
SAFE_CORE_OPS = frozenset({"Cast", "Slice", "SliceUpdate", "Unstack", "ConvertToTensor", "StopGradient",
                           "SaturateCast", "Scatter", "ScatterUpdate"})
_OP_CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*$")

# Activation functions, as Keras 3 references them ({"class_name": "function", "config": "relu"}) and as
# both Kerases name them in an "activation" field.
SAFE_ACTIVATIONS = frozenset("""
linear relu relu6 leaky_relu elu selu gelu silu swish mish sigmoid hard_sigmoid hard_silu hard_swish softmax
log_softmax softplus softsign tanh exponential celu glu hard_tanh log_sigmoid sparse_plus sparsemax squareplus
tanh_shrink threshold soft_shrink hard_shrink
""".split())
_ACTIVATION_MODULES = ("keras.activations", "keras.src.activations", "keras.src.activations.activations")

# ---- Keras 2 TF-op layers ---------------------------------------------------------------------------------
#: Namespaces of TensorFlow whose every function is a pure tensor computation.
SAFE_TF_NAMESPACES = ("math.", "nn.", "linalg.", "__operators__.", "bitwise.", "signal.")
#: Other pure TensorFlow functions, by the name TFOpLambda stores (the canonical API name, without "tf.").
SAFE_TF_FUNCTIONS = frozenset("""
reshape transpose concat stack unstack squeeze expand_dims split gather gather_nd slice strided_slice cast
clip_by_value clip_by_norm pad tile identity ones_like zeros_like ones zeros fill shape size rank broadcast_to
matmul einsum where argmax argmin one_hot reverse roll range cumsum maximum minimum abs add subtract multiply
divide truediv pow sqrt exp square sign round floor ceil norm boolean_mask sort argsort repeat linspace meshgrid
tensordot searchsorted reduce_sum reduce_mean reduce_max reduce_min reduce_prod reduce_any reduce_all
reduce_logsumexp convert_to_tensor stop_gradient
image.resize image.resize_with_pad image.resize_with_crop_or_pad image.central_crop image.crop_to_bounding_box
image.pad_to_bounding_box image.rgb_to_grayscale image.grayscale_to_rgb image.rgb_to_hsv image.hsv_to_rgb
image.rgb_to_yuv image.yuv_to_rgb image.flip_left_right image.flip_up_down image.rot90 image.transpose
image.per_image_standardization image.convert_image_dtype image.adjust_brightness image.adjust_contrast
image.adjust_gamma image.adjust_saturation image.adjust_hue image.crop_and_resize image.extract_patches
image.image_gradients image.sobel_edges
""".split())
_TFOP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})


def tf_function_allowed(name: str) -> bool:
    """Whether a TFOpLambda may call ``tf.<name>``."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        return False
    return name in SAFE_TF_FUNCTIONS or name.startswith(SAFE_TF_NAMESPACES)


def _layer_name(node: dict) -> str:
    cfg = node.get("config")
    name = cfg.get("name") if isinstance(cfg, dict) else None
    return str(name if name is not None else node.get("name", "?"))


def config_problems(config) -> list[str]:
    """Every object in a Keras model config (.keras config.json, .h5 model_config, model.to_json()) that is
    not on the allowlist, as 'layer NAME (CLASS)' descriptions. Empty means safe to deserialize.

    The walk is iterative: a crafted, deeply nested config cannot exhaust Python's recursion limit here.
    """
    found: list[str] = []
    stack: list = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            # Only the top-level optimizer and losses are never built (edgekit loads with compile=False);
            # Keras still compiles a nested model's compile_config, so those are checked like the rest.
            if key == "compile_config" and node is config:
                continue
            if key in ("activation", "recurrent_activation") and isinstance(value, str) \
                    and value not in SAFE_ACTIVATIONS:
                found.append(f"{_layer_name(node)} (activation '{value}')")
            stack.append(value)
        if "class_name" not in node:
            continue
        problem = _object_problem(node)
        if problem:
            found.append(problem)
    return found


def _object_problem(node: dict) -> str | None:
    cls = node.get("class_name")
    module = node.get("module")
    registered = node.get("registered_name")
    if not isinstance(cls, str):
        return f"an object with class_name {cls!r}"
    if cls in _VALUE_MARKERS:
        return None
    if cls == "__lambda__":
        return f"{_layer_name(node)} (a Python lambda)"
    if cls == "function":
        name = node.get("config")
        if isinstance(module, str) and module.startswith(_ACTIVATION_MODULES) and name in SAFE_ACTIVATIONS:
            return None
        return f"function {name!r} from module {module!r}"
    if module in SAFE_OP_MODULES or module == "keras.src.ops.core":
        ok = cls in SAFE_CORE_OPS if module == "keras.src.ops.core" else bool(_OP_CLASS.match(cls))
        if ok and registered in (None, cls):
            return None
        return f"{_layer_name(node)} ({module}.{cls})"
    if cls not in SAFE_CLASSES:
        return f"{_layer_name(node)} ({cls})"
    if module is not None and not (isinstance(module, str) and module.split(".")[0] in ("keras", "tf_keras")):
        return f"{_layer_name(node)} ({cls} from module {module!r})"
    if registered not in (None, cls) and not (isinstance(registered, str) and registered.endswith(">" + cls)
                                              and registered.startswith(("keras", "tf_keras"))):
        return f"{_layer_name(node)} ({cls} registered as {registered!r})"
    if cls in _TFOP_LAYERS:
        cfg = node.get("config") if isinstance(node.get("config"), dict) else {}
        fn = cfg.get("function")
        allowed = fn == "__operators__.getitem" if cls == "SlicingOpLambda" else tf_function_allowed(fn)
        if not allowed:
            return f"{_layer_name(node)} ({cls} calling tf.{fn})"
        return _tfop_call_problem(node, cls, fn)
    return None


_SHAPE_ARGS = frozenset({"shape", "size", "multiples", "dims", "new_shape", "output_shape"})


def _tfop_call_problem(node: dict, cls: str, fn) -> str | None:
    """A TF-op layer whose inputs are all constants runs while Keras rebuilds the model, not in the graph;
    and a shape argument can ask for any amount of memory. Neither appears in a real model."""
    inbound = node.get("inbound_nodes")
    refs: list[str] = []
    numbers: list[tuple[str, list]] = []
    stack = [inbound]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k in _SHAPE_ARGS and isinstance(v, list):
                    numbers.append((k, v))
                stack.append(v)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                refs.append(item[0])  # a Keras 2 node reference: [layer name, node index, tensor index, ...]
            stack.extend(item)
    if refs and all(r == "_CONSTANT_VALUE" for r in refs):
        return f"{_layer_name(node)} ({cls} calling tf.{fn} on constants only: it would run while loading)"
    for key, dims in numbers:
        total = 1
        for d in dims:
            if isinstance(d, int | float) and not isinstance(d, bool) and d > 0:
                total *= d
        if total > _MAX_SHAPE_ELEMENTS:
            return f"{_layer_name(node)} ({cls} calling tf.{fn} with {key}={dims}: {total:.3g} elements)"
    return None


_MAX_SHAPE_ELEMENTS = 100_000_000


def check_config(path: Path, config, *, unsafe: bool) -> None:
    """Raise UnsafeModelError naming the first object outside the allowlist (unless ``unsafe``)."""
    if not unsafe:
        _refuse(path, config_problems(config), "layer {} is not on edgekit's allowlist of built-in Keras objects "
                                               "(a custom layer, or one that can run code stored in the file)")


def _refuse(path: Path, problems: list[str], template: str) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafeModelError(path, template.format(problems[0] + more) + f"; {_UNSAFE_HINT}")


# ---- SavedModel graphs ------------------------------------------------------------------------------------
#: Stateful TensorFlow ops a SavedModel may run: variables, lookup tables, random numbers, control flow and
#: restoring its own variables. Any other stateful op (files, printing, summaries, Python, queues...) is refused.
SAFE_STATEFUL_OPS = frozenset("""
VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp VarIsInitializedOp
DestroyResourceOp DisableCopyOnRead ResourceGather ResourceGatherNd ResourceScatterUpdate ResourceScatterAdd
VariableV2 Variable Assign AssignAdd AssignSub IsVariableInitialized
StatefulPartitionedCall PartitionedCall If While Case StatelessIf StatelessWhile StatelessCase
RestoreV2 Restore RestoreSlice Placeholder PlaceholderWithDefault NoOp Const Assert
HashTable HashTableV2 MutableHashTable MutableHashTableV2 MutableHashTableOfTensors MutableHashTableOfTensorsV2
MutableDenseHashTableV2 LookupTableFind LookupTableFindV2 LookupTableImport LookupTableImportV2
LookupTableInsertV2 LookupTableSizeV2 LookupTableExportV2 InitializeTable InitializeTableV2 AnonymousHashTable
RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal RandomShuffle Multinomial RandomGamma
RandomPoisson RandomPoissonV2 RngReadAndSkip RngSkip StatefulUniform StatefulUniformInt
StatefulStandardNormalV2 StatefulTruncatedNormal StatefulUniformFullInt
""".split())
#: Stateless ops that nevertheless read files.
FILE_READING_OPS = frozenset({"ReadFile", "MatchingFiles", "ImmutableConst", "LoadAndRemapMatrix",
                              "GenerateVocabRemapping", "InitializeTableFromTextFile",
                              "InitializeTableFromTextFileV2"})
_SAVE_ONLY_OPS = frozenset({"SaveV2", "MergeV2Checkpoints"})


def _called(node_def) -> set[str]:
    names = set()
    for attr in node_def.attr.values():
        if attr.func.name:
            names.add(attr.func.name)
        names.update(f.name for f in attr.list.func)
    return names


def _read_savedmodel(path: Path, name: str):
    """The SavedModel proto from ``saved_model.pb`` or ``saved_model.pbtxt`` (TensorFlow reads either)."""
    from tensorflow.core.protobuf import saved_model_pb2

    f = path / name
    sm = saved_model_pb2.SavedModel()
    try:
        if name.endswith(".pbtxt"):
            from google.protobuf import text_format

            text_format.Parse(f.read_text(encoding="utf-8"), sm)
        else:
            sm.ParseFromString(f.read_bytes())
    except Exception as exc:  # protobuf's DecodeError/ParseError, UnicodeDecodeError, RecursionError
        raise InputFileError(f, f"is truncated or corrupt (cannot parse: {exc.__class__.__name__})") from None
    return sm


def _ancestors(nodes: dict, roots: set[str]) -> set[str]:
    """Graph nodes that ``roots`` depend on (data and control inputs), roots included."""
    seen, todo = set(), [r for r in roots if r in nodes]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for inp in nodes[name].input:
            todo.append(inp.lstrip("^").split(":")[0])
    return seen


def savedmodel_problems(path: Path) -> list[str]:
    """TensorFlow ops in a SavedModel that could act outside the graph (write or read files, print, run
    Python), as 'op TYPE in FUNCTION' descriptions."""
    from tensorflow.python.framework import op_def_registry

    problems: list[str] = []
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if not (path / name).is_file():
            continue
        sm = _read_savedmodel(path, name)
        for mg in sm.meta_graphs:
            problems += _meta_graph_problems(mg, op_def_registry)
    return problems


def _meta_graph_problems(mg, op_def_registry) -> list[str]:
    functions = {f.signature.name: f for f in mg.graph_def.library.function}
    calls = {name: set().union(*(_called(n) for n in f.node_def)) if f.node_def else set()
             for name, f in functions.items()}

    def reach(roots: set[str]) -> set[str]:
        seen, todo = set(), list(roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(calls.get(name, ()))
        return seen

    nodes = {n.name: n for n in mg.graph_def.node}
    save_node = mg.saver_def.save_tensor_name.split(":")[0] if mg.saver_def.save_tensor_name else ""
    # The saver writes checkpoints only when its save tensor is evaluated, which loading never does; unless
    # another node depends on it (a restore op with a control input on it would run it at load time).
    others = set(nodes) - _ancestors(nodes, {save_node})
    live_nodes = _ancestors(nodes, others)
    save_nodes = _ancestors(nodes, {save_node}) - live_nodes
    other_roots = set(mg.object_graph_def.concrete_functions.keys())
    save_roots: set[str] = set()
    for n in mg.graph_def.node:
        (save_roots if n.name in save_nodes else other_roots).update(_called(n))
    save_only = reach(save_roots) - reach(other_roots)
    problems = []
    checked = [(f"graph node {n.name}", n, n.name in save_nodes) for n in mg.graph_def.node]
    for name, f in functions.items():
        checked += [(f"function {name}", n, name in save_only) for n in f.node_def]
    for where, n, saver in checked:
        if saver and n.op in _SAVE_ONLY_OPS:
            continue
        if n.op in FILE_READING_OPS:
            problems.append(f"op {n.op} in {where} (reads files)")
            continue
        op_def = op_def_registry.get(n.op)
        if op_def is None:
            if n.op not in functions:  # a call to a library function by name is fine
                problems.append(f"op {n.op} in {where} (unknown to TensorFlow)")
        elif op_def.is_stateful and n.op not in SAFE_STATEFUL_OPS:
            problems.append(f"op {n.op} in {where}")
    return problems


def check_savedmodel(path: Path, *, unsafe: bool) -> None:
    if not unsafe:
        _refuse(path, savedmodel_problems(path), "the SavedModel uses {}, which can act outside the model (files, "
                                                 "printing, Python)")
