"""Adversarial training on the token embeddings: FGM, PGD and FreeLB (`--adversarial`).

Each step perturbs the output of the backbone's token embedding layer in the
direction that raises the loss most, per example, and trains on the perturbed
input too; the model learns to keep its prediction in a small ball around each
input. The perturbation is computed per replica inside the training step (a
GradientTape on the embeddings), so it works under every strategy, with XLA, and
under mixed_float16 with the optimizer's loss scale applied to its gradient.

    fgm     (Miyato et al. 2017) r = eps * g / ||g||; loss = clean + adversarial
    pgd     (Madry et al. 2018) K ascent steps of size alpha from the clean input,
            each projected onto ||r|| <= eps; loss = clean + adversarial(r_K)
    freelb  (Zhu et al. 2020) K ascent steps from a random start of norm alpha,
            projected likewise; loss = mean of the K perturbed losses (their gradients
            all count, as in FreeLB)

g is the gradient of the loss with respect to the embeddings and ||.|| the L2 norm
over one example's positions and features. The log shows `clean_loss` and
`adversarial_loss` beside `loss`. Nothing changes in the model that is served.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --adversarial=fgm --adv_epsilon=0.1
"""

import contextlib
import threading

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques import parts
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.string(
        "adversarial", "none",
        "Adversarial training on the token embeddings: fgm (one step of size --adv_epsilon), "
        "pgd (--adv_steps steps of --adv_alpha, projected onto --adv_epsilon), freelb "
        "(--adv_steps steps, their losses averaged), or none. Roughly 2x (fgm) to "
        "(steps+1)x the time per step."),
    options.number(
        "adv_epsilon", 0.1,
        "Largest L2 norm of one example's embedding perturbation (all its positions); "
        "MiniLM-L6's token embeddings have norms near 1, and 0.3 already slowed SST-2 training."),
    options.number(
        "adv_alpha", 0.03,
        "Size of each pgd/freelb ascent step (and freelb's random start)."),
    options.integer(
        "adv_steps", 3,
        "Ascent steps of pgd and freelb."),
)

METHODS = ("fgm", "pgd", "freelb")


def token_embedding(model, cfg):
    """The token embedding layer of the keras-hub backbone in `model`; UserError if none."""
    layer = parts.token_embedding(model)
    if layer is None:
        raise UserError(
            f"--adversarial={cfg.adversarial} perturbs token embeddings, but --backbone="
            f"{cfg.backbone} has none (it does not read word pieces); train without --adversarial.")
    return layer


class EmbeddingPerturbation:
    """Wraps a layer's `call` so that, inside `active(perturb)`, its outputs pass through
    `perturb` (outside, and in other threads such as other replicas, it is the identity).

    Example:
        hook = EmbeddingPerturbation.of(token_embedding(model, cfg))
        with hook.active(lambda embeddings: embeddings + delta):
            outputs = model(inputs, training=True)
    """

    def __init__(self, layer):
        self._call = layer.call
        self._local = threading.local()

    @classmethod
    def of(cls, layer):
        """The layer's hook, installed on first use."""
        if not isinstance(layer.call, cls):
            layer.call = cls(layer)
        return layer.call

    def __call__(self, *args, **kwargs):
        outputs = self._call(*args, **kwargs)
        perturb = getattr(self._local, "perturb", None)
        if perturb is None or kwargs.get("reverse"):  # reverse: a tied output projection
            return outputs
        return perturb(outputs)

    @contextlib.contextmanager
    def active(self, perturb):
        self._local.perturb = perturb
        try:
            yield
        finally:
            self._local.perturb = None


class Adversarial(Technique):
    """Adds an adversarial loss on perturbed token embeddings to every training step."""

    name, flag, order = "adversarial", "--adversarial", 110
    inputs = {"word_pieces"}
    claims = {"student_forward", "changed_inputs"}

    def __init__(self, method, epsilon, alpha, steps, seed):
        self.method, self.epsilon, self.alpha, self.steps, self.seed = (
            method, epsilon, alpha, steps, seed)

    def adapt_model(self, model, cfg):
        token_embedding(model, cfg)  # a backbone without token embeddings fails here, early
        return model

    def wrap_loss(self, step_loss, run):
        import tensorflow as tf

        from tfimitate.training import loop

        hook = EmbeddingPerturbation.of(token_embedding(run.model, run.cfg))
        scale_loss = run.optimizer.scale_loss if run.optimizer is not None else (lambda x: x)

        def forward(model, inputs, labels, make_delta, tape=None):
            """step_loss's terms with make_delta(embeddings) (float32) added to the token
            embeddings, and that delta (watched by `tape`)."""
            made = []

            def perturb(embeddings):
                delta = make_delta(embeddings)
                if tape is not None:
                    tape.watch(delta)
                made.append(delta)
                return embeddings + tf.cast(delta, embeddings.dtype)

            with hook.active(perturb):
                terms = loop.loss_terms(step_loss(model, inputs, labels))
            return terms, made[0]

        def ascent(model, inputs, labels, make_delta):
            """(terms at the delta, that delta, the unit gradient of their loss w.r.t. it)."""
            with tf.GradientTape() as tape:
                terms, delta = forward(model, inputs, labels, make_delta, tape)
                # The optimizer's loss scale keeps float16 gradients from underflowing.
                scaled = scale_loss(tf.nn.compute_average_loss(terms["loss"]))
            return terms, delta, unit(tape.gradient(scaled, delta))

        def adversarial_step_loss(model, inputs, labels):
            if self.method == "freelb":
                return free_large_batch(model, inputs, labels)
            zeros = lambda embeddings: tf.zeros_like(embeddings, tf.float32)
            clean, _, direction = ascent(model, inputs, labels, zeros)
            if self.method == "fgm":
                delta = self.epsilon * direction
            else:
                delta = project(self.alpha * direction, self.epsilon)
                for _ in range(self.steps - 1):
                    _, _, direction = ascent(model, inputs, labels, _constant(delta))
                    delta = project(delta + self.alpha * direction, self.epsilon)
            # The perturbation is an input: no gradient flows into how it was found.
            adversarial, _ = forward(model, inputs, labels, _constant(tf.stop_gradient(delta)))
            return dict(clean, loss=clean["loss"] + adversarial["loss"],
                        clean_loss=clean["loss"], adversarial_loss=adversarial["loss"])

        def free_large_batch(model, inputs, labels):
            make_delta = lambda embeddings: self._random_start(embeddings, inputs, run.optimizer)
            losses = []
            for step in range(self.steps):
                if step + 1 == self.steps:
                    terms, _ = forward(model, inputs, labels, make_delta)
                else:
                    terms, delta, direction = ascent(model, inputs, labels, make_delta)
                    make_delta = _constant(tf.stop_gradient(
                        project(delta + self.alpha * direction, self.epsilon)))
                losses.append(terms["loss"])
            return dict(terms, loss=tf.add_n(losses) / len(losses), adversarial_loss=losses[-1])

        return adversarial_step_loss

    def _random_start(self, embeddings, inputs, optimizer):
        """FreeLB's start: uniform noise on the real (unpadded) positions, scaled to a norm
        of alpha, seeded by the run's seed, the step and the replica."""
        import tensorflow as tf

        step = tf.constant(0, tf.int64) if optimizer is None else tf.cast(optimizer.iterations, tf.int64)
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
        seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self.seed, tf.int64), step]), replica)
        noise = tf.random.stateless_uniform(tf.shape(embeddings), seed, -1.0, 1.0)
        if isinstance(inputs, dict) and "padding_mask" in inputs:
            noise *= tf.cast(inputs["padding_mask"], tf.float32)[:, :, None]
        return self.alpha * unit(noise)


def _constant(delta):
    return lambda embeddings: delta


def unit(gradient):
    """`gradient` divided by its L2 norm per example (float32); 0 where that norm is 0,
    NaN or infinite (e.g. an overflow under float16 loss scaling)."""
    import tensorflow as tf

    gradient = tf.cast(gradient, tf.float32)
    axes = list(range(1, gradient.shape.rank))
    norm = tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=axes, keepdims=True))
    direction = tf.math.divide_no_nan(gradient, norm)
    return tf.where(tf.math.is_finite(norm), direction, tf.zeros_like(direction))


def project(delta, radius):
    """`delta` scaled down, per example, to an L2 norm of at most `radius`."""
    import tensorflow as tf

    axes = list(range(1, delta.shape.rank))
    norm = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=axes, keepdims=True))
    return delta * tf.minimum(1.0, radius / tf.maximum(norm, 1e-12))


def from_config(cfg):
    """The technique asked for by --adversarial, or None; UserError for bad settings."""
    if cfg.adversarial in (None, "", "none"):
        return None
    if cfg.adversarial not in METHODS:
        raise UserError(f"--adversarial={cfg.adversarial} is unknown; use fgm, pgd or freelb "
                        "(or none).")
    if not cfg.adv_epsilon > 0:
        raise UserError(f"--adv_epsilon={cfg.adv_epsilon} must be above 0: it is the largest "
                        "L2 norm of an example's embedding perturbation (try 0.1).")
    if cfg.adversarial != "fgm":
        if not cfg.adv_alpha > 0:
            raise UserError(f"--adv_alpha={cfg.adv_alpha} must be above 0: it is the size of "
                            f"each {cfg.adversarial} ascent step (try 0.03).")
        if cfg.adv_steps < 1:
            raise UserError(f"--adv_steps={cfg.adv_steps} must be at least 1 (try 3).")
    return Adversarial(cfg.adversarial, cfg.adv_epsilon, cfg.adv_alpha, cfg.adv_steps, cfg.seed)
