"""Request metrics under TF Serving's names, in Prometheus' text format.

TF Serving (with a --monitoring_config_file that enables `prometheus_config`) serves
its monitoring counters on the REST port at `prometheus_config.path`; the ones
operators chart are these, with TF Serving's names and labels:

    :tensorflow:serving:request_count{model_name, status}        counter
    :tensorflow:serving:request_latency{model_name, API, entrypoint}  histogram, microseconds
    :tensorflow:serving:request_example_count_total{model}       counter (Classify/Regress)

The histogram buckets are TF Serving's (exponential from 10 us, factor 1.8, 33 buckets).
TF Serving exports many more (load latencies, batching, TF runtime); this is the subset
the dev server can measure. Written by hand rather than with prometheus_client, which
renames counters to `*_total` and adds `*_created` series that TF Serving does not have.

Example:
    metrics = Metrics()
    metrics.record("sst2", "Predict", "GRPC", "OK", seconds=0.004)
    print(metrics.page())
"""

import collections
import functools
import threading

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

BUCKETS = tuple(10 * 1.8 ** i for i in range(33))
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
EXAMPLE_COUNT = ":tensorflow:serving:request_example_count_total"


class Metrics:
    """Thread-safe request counters and latency histograms."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = collections.Counter()  # (model, status) -> requests
        self._examples = collections.Counter()  # model -> examples classified/regressed
        self._latency = {}  # (model, API, entrypoint) -> [bucket counts..., sum, count]

    def record(self, model_name, api, entrypoint, status, seconds, examples=0):
        """Counts one request (`status`: the gRPC status name, e.g. "OK") and its latency."""
        micros = seconds * 1e6
        with self._lock:
            self._counts[(model_name, status)] += 1
            if examples:
                self._examples[model_name] += examples
            cells = self._latency.setdefault((model_name, api, entrypoint),
                                             [0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if micros <= bound:
                    cells[i] += 1
            cells[-2] += micros
            cells[-1] += 1

    def page(self):
        """The Prometheus text exposition of every metric."""
        with self._lock:
            lines = [f"# TYPE {REQUEST_COUNT} counter"]
            lines += [f'{REQUEST_COUNT}{{model_name="{_escape(m)}",status="{s}"}} {n}'
                      for (m, s), n in sorted(self._counts.items())]
            lines.append(f"# TYPE {EXAMPLE_COUNT} counter")
            lines += [f'{EXAMPLE_COUNT}{{model="{_escape(m)}"}} {n}'
                      for m, n in sorted(self._examples.items())]
            lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
            for (model, api, entrypoint), cells in sorted(self._latency.items()):
                labels = f'model_name="{_escape(model)}",API="{api}",entrypoint="{entrypoint}"'
                for bound, count in zip(BUCKETS, cells):
                    lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="{bound:.10g}"}} {count}')
                lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="+Inf"}} {cells[-1]}')
                lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {cells[-2]:.10g}")
                lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {cells[-1]}")
        return "\n".join(lines) + "\n"


def _escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@functools.lru_cache(maxsize=1)
def _monitoring_config_class():
    """TF Serving's MonitoringConfig message (tensorflow_serving/config/monitoring_config.proto,
    which the tensorflow-serving-api wheel does not ship), built from its two fields."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving",
        syntax="proto3")
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2,
                         type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1,
                         type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig",
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def monitoring_config():
    """A new, empty MonitoringConfig (text-format parsable, as --monitoring_config_file)."""
    return _monitoring_config_class()()
