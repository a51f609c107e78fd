"""Early-bird lottery-ticket identification for Transformers (ViT, BERT).

Masks from slimming coefficients (`earlybird.masks`), records (`earlybird.records`), detectors
(`earlybird.detectors`), pruning plans (`earlybird.plans`) and the model side (`earlybird.slimming`).
"""

import os
import warnings

__version__ = "0.1.0"


def _check_transformers_patch():
    """Warn at import when the installed transformers is not the patched 5.23.0 (e.g. upgraded behind our back)."""
    if os.environ.get("EARLYBIRD_SKIP_PATCH_CHECK"):
        return
    from . import transformers_patch

    if not transformers_patch.MANIFEST.exists():  # not a source checkout: nothing to compare with
        return
    try:
        state, _ = transformers_patch.overall_state(transformers_patch.installed_transformers_dir())
    except (transformers_patch.PatchError, OSError) as err:
        state = f"unreadable ({err})"
    if state != "patched":
        warnings.warn(
            f"earlybird: the installed transformers is {state}, not the patched {transformers_patch.TRANSFORMERS_VERSION}"
            " that slimming and pruning need; re-run `bash setup.sh`.",
            stacklevel=3,
        )


_check_transformers_patch()
