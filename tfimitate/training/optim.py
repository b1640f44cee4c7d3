"""AdamW with linear warmup then linear decay to zero, optionally with per-weight rates.

Example:
    optimizer = make_optimizer(learning_rate=5e-5, total_steps=1000,
                               warmup_ratio=0.1, weight_decay=0.01)
    optimizer = make_optimizer(5e-5, 1000, 0.1, 0.01,
                               factors={"logits/kernel": lambda step: 2.0})
"""

import keras

GLOBAL_CLIPNORM = 1.0


@keras.saving.register_keras_serializable(package="tfimitate")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `peak` over `warmup_steps`, then falls linearly to 0.

    Example:
        schedule = WarmupLinearDecay(peak=5e-5, warmup_steps=100, total_steps=1000)
        schedule(50)  # 2.5e-5
    """

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = keras.ops.maximum(float(self.warmup_steps), 1.0)
        rising = self.peak * step / warmup
        remaining = keras.ops.maximum(float(self.total_steps - self.warmup_steps), 1.0)
        falling = self.peak * keras.ops.maximum(
            0.0, (self.total_steps - step) / remaining)
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="tfimitate")
class PhasedWarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A WarmupLinearDecay per training phase, each over its own steps.

    Example:
        schedule = PhasedWarmupLinearDecay(starts=[0, 500], peaks=[1e-3, 1e-4],
                                           total_steps=2000, warmup_ratio=0.1)
        schedule(575)  # 5e-5: halfway through phase 2's 150-step warmup to 1e-4
    """

    def __init__(self, starts, peaks, total_steps, warmup_ratio):
        self.starts = list(starts)
        self.peaks = list(peaks)
        self.total_steps = total_steps
        self.warmup_ratio = warmup_ratio
        ends = self.starts[1:] + [total_steps]
        self.phases = [WarmupLinearDecay(peak, int(round((end - start) * warmup_ratio)), end - start)
                       for start, end, peak in zip(self.starts, ends, self.peaks)]

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rate = self.phases[0](step)
        for start, phase in zip(self.starts[1:], self.phases[1:]):
            rate = keras.ops.where(step >= start, phase(step - start), rate)
        return rate

    def get_config(self):
        return {"starts": self.starts, "peaks": self.peaks, "total_steps": self.total_steps,
                "warmup_ratio": self.warmup_ratio}


class FactoredAdamW(keras.optimizers.AdamW):
    """AdamW with a learning-rate factor per weight (Keras has one rate for all weights).

    `factors` maps a variable path to a function of the optimizer step returning the
    factor; weights not named train at factor 1. The factor scales the weight's whole
    decoupled update, Adam step and weight decay, exactly as its own learning rate would;
    0 leaves it bit-for-bit unchanged while its Adam moments still follow its gradient.
    Scaling gradients instead would not do this: Adam's step does not scale with them.

    It relies on two Keras 3 optimizer internals, both checked by tests/test_layer_rates.py:
    `update_step` gets each weight's learning rate, and `_apply_weight_decay` (which
    uses the global rate) is replaced by decay inside `update_step`, in the same order.

    Example:
        optimizer = FactoredAdamW({"transformer_layer_0/query/kernel": lambda step: 0.5},
                                  learning_rate=1e-4, weight_decay=0.01)
    """

    def __init__(self, factors, **kwargs):
        super().__init__(**kwargs)
        self._factors_by_path = dict(factors)

    def build(self, variables):
        super().build(variables)
        self._factors = [self._factors_by_path.get(v.path) for v in variables]

    def _apply_weight_decay(self, variables):
        """Decay happens in update_step, at each weight's own rate."""
        del variables

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor is not None:
            learning_rate = learning_rate * factor(self.iterations)
        if self.weight_decay and self._use_weight_decay(variable):
            rate = keras.ops.cast(learning_rate, variable.dtype)
            self.assign_sub(variable, variable * keras.ops.cast(self.weight_decay, variable.dtype)
                            * rate)
        super().update_step(gradient, variable, learning_rate)


def make_optimizer(learning_rate, total_steps, warmup_ratio, weight_decay,
                   loss_scale=False, phases=None, factors=None):
    """AdamW on the warmup/decay schedule; no decay on biases and LayerNorm.

    With `phases` (hooks.Phase list), each phase warms up and decays to its own
    peak learning rate over its own steps (`learning_rate` is then unused). With
    `factors` ({variable path: function of the step}, see FactoredAdamW) some weights
    train at their own multiple of the rate.

    It does not clip: Keras clips each replica's share of the gradient before
    summing them, so the training loop clips the summed gradient to GLOBAL_CLIPNORM.
    """
    if phases and len(phases) > 1:
        schedule = PhasedWarmupLinearDecay([p.start for p in phases],
                                           [p.learning_rate for p in phases],
                                           total_steps, warmup_ratio)
    else:
        peak = phases[0].learning_rate if phases else learning_rate
        schedule = WarmupLinearDecay(peak, int(round(total_steps * warmup_ratio)), total_steps)
    kwargs = dict(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6)
    optimizer = FactoredAdamW(factors, **kwargs) if factors else keras.optimizers.AdamW(**kwargs)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
