"""The facade's activation verbs for a custom head (Monk's ``append_<activation>``, with its
argument names and defaults): each appends one activation to the head that
``facade_layers.py`` describes; ``List_Activations_Transfer_Learning`` lists those the
experiment's backend builds.

Example:
    >>> gtf.append_linear(num_neurons=256)
    >>> gtf.append_leakyrelu(negative_slope=0.1)
    >>> gtf.append_linear(final_layer=True)
"""
from .facade_base import FacadeBase
from .facade_layers import append_layer


class ActivationVerbs(FacadeBase):
    """Mixed into ``prototype``: one ``append_*`` verb per custom-head activation."""

    def append_elu(self, alpha: float = 1.0, final_layer: bool = False) -> None:
        """Append exponential linear unit: x if x > 0 else alpha * (exp(x) - 1).

        Args:
            alpha: the negative side's scale.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_elu(alpha=1.0)
        """
        append_layer(self, "elu", {"alpha": alpha}, final_layer)

    def append_celu(self, alpha: float = 1.0, final_layer: bool = False) -> None:
        """Append continuously differentiable ELU: max(0, x) + min(0, alpha * (exp(x / alpha) -
        1)).

        Args:
            alpha: the negative side's scale, > 0.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_celu(alpha=1.0)
        """
        append_layer(self, "celu", {"alpha": alpha}, final_layer)

    def append_hardshrink(self, lambd: float = 0.5, final_layer: bool = False) -> None:
        """Append hard shrinkage: x where |x| > lambd, else 0.

        Args:
            lambd: the threshold, >= 0.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_hardshrink(lambd=0.5)
        """
        append_layer(self, "hardshrink", {"lambd": lambd}, final_layer)

    def append_hardtanh(self, min_val: float = -1.0, max_val: float = 1.0,
                        final_layer: bool = False) -> None:
        """Append x clipped to [min_val, max_val].

        Args:
            min_val: the lower limit.
            max_val: the upper limit, > min_val.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_hardtanh(min_val=-1.0, max_val=1.0)
        """
        append_layer(self, "hardtanh", {"min_val": min_val, "max_val": max_val}, final_layer)

    def append_leakyrelu(self, negative_slope: float = 0.01, final_layer: bool = False) -> None:
        """Append leaky ReLU: x if x > 0 else negative_slope * x.

        Args:
            negative_slope: the negative side's slope, >= 0.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_leakyrelu(negative_slope=0.01)
        """
        append_layer(self, "leakyrelu", {"negative_slope": negative_slope}, final_layer)

    def append_logsigmoid(self, final_layer: bool = False) -> None:
        """Append log(sigmoid(x)); at the end of the head it is left out (the loss applies its
        own).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_logsigmoid()
        """
        append_layer(self, "logsigmoid", {}, final_layer)

    def append_logsoftmax(self, final_layer: bool = False) -> None:
        """Append log-softmax over the features; at the end of the head it is left out (the loss
        applies softmax itself).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_logsoftmax()
        """
        append_layer(self, "logsoftmax", {}, final_layer)

    def append_prelu(self, num_parameters: int = 1, init: float = 0.25,
                     final_layer: bool = False) -> None:
        """Append parametric ReLU: x if x > 0 else a * x, with a learnt slope a.

        Args:
            num_parameters: the number of slopes; 1 (one shared slope) on every backend.
            init: the slope's initial value.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_prelu(num_parameters=1, init=0.25)
        """
        append_layer(self, "prelu", {"num_parameters": num_parameters, "init": init}, final_layer)

    def append_relu(self, final_layer: bool = False) -> None:
        """Append rectified linear unit: max(0, x).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_relu()
        """
        append_layer(self, "relu", {}, final_layer)

    def append_relu6(self, final_layer: bool = False) -> None:
        """Append min(max(0, x), 6).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_relu6()
        """
        append_layer(self, "relu6", {}, final_layer)

    def append_rrelu(self, lower: float = 0.125, upper: float = 0.333,
                     final_layer: bool = False) -> None:
        """Append randomised leaky ReLU: while training the negative slope is drawn from U(lower,
        upper), at evaluation it is (lower + upper) / 2.

        Args:
            lower: the smallest slope, in [0, 1].
            upper: the largest slope, in [lower, 1].
            final_layer: True ends the head.

        Example:
            >>> gtf.append_rrelu(lower=0.125, upper=0.333)
        """
        append_layer(self, "rrelu", {"lower": lower, "upper": upper}, final_layer)

    def append_selu(self, final_layer: bool = False) -> None:
        """Append scaled exponential linear unit (self-normalising).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_selu()
        """
        append_layer(self, "selu", {}, final_layer)

    def append_sigmoid(self, final_layer: bool = False) -> None:
        """Append 1 / (1 + exp(-x)); at the end of the head it is left out (the loss applies
        softmax, or sigmoid in multi-label mode, itself).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_sigmoid()
        """
        append_layer(self, "sigmoid", {}, final_layer)

    def append_softmax(self, final_layer: bool = False) -> None:
        """Append softmax over the features; at the end of the head it is left out (the loss and
        the predictions apply softmax themselves).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_softmax()
        """
        append_layer(self, "softmax", {}, final_layer)

    def append_softmin(self, final_layer: bool = False) -> None:
        """Append softmax(-x) over the features; at the end of the head it is left out.

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_softmin()
        """
        append_layer(self, "softmin", {}, final_layer)

    def append_softplus(self, beta: float = 1, threshold: float = 20,
                        final_layer: bool = False) -> None:
        """Append log(1 + exp(beta * x)) / beta (linear above threshold).

        Args:
            beta: the sharpness, > 0.
            threshold: above beta * x > threshold the output is x, > 0.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_softplus(beta=1, threshold=20)
        """
        append_layer(self, "softplus", {"beta": beta, "threshold": threshold}, final_layer)

    def append_softshrink(self, lambd: float = 0.5, final_layer: bool = False) -> None:
        """Append soft shrinkage: x - lambd if x > lambd, x + lambd if x < -lambd, else 0.

        Args:
            lambd: the threshold, >= 0.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_softshrink(lambd=0.5)
        """
        append_layer(self, "softshrink", {"lambd": lambd}, final_layer)

    def append_softsign(self, final_layer: bool = False) -> None:
        """Append x / (1 + |x|).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_softsign()
        """
        append_layer(self, "softsign", {}, final_layer)

    def append_swish(self, beta: float = 1.0, final_layer: bool = False) -> None:
        """Append x * sigmoid(beta * x) (SiLU when beta is 1).

        Args:
            beta: the sigmoid's scale.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_swish(beta=1.0)
        """
        append_layer(self, "swish", {"beta": beta}, final_layer)

    def append_tanh(self, final_layer: bool = False) -> None:
        """Append hyperbolic tangent.

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_tanh()
        """
        append_layer(self, "tanh", {}, final_layer)

    def append_tanhshrink(self, final_layer: bool = False) -> None:
        """Append x - tanh(x).

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_tanhshrink()
        """
        append_layer(self, "tanhshrink", {}, final_layer)

    def append_threshold(self, threshold: float, value: float, final_layer: bool = False) -> None:
        """Append x if x > threshold else value.

        Args:
            threshold: the threshold.
            value: what replaces x at or below it.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_threshold(threshold=0.1, value=0.0)
        """
        append_layer(self, "threshold", {"threshold": threshold, "value": value}, final_layer)
