"""``medfilip predict`` and ``medfilip export``: a trained model's commands (medfilip.predict owns their
arguments and runs them, so ``python -m medfilip.predict`` works without the pipeline)."""

from __future__ import annotations


def register(sub) -> None:
    # medfilip.predict's top level stays light (no torch): the model loads inside run_predict / run_export
    from medfilip.predict import add_export_arguments, add_predict_arguments, run_export, run_predict

    helptext = "zero-shot scores of images (PNG, JPEG, DICOM) under a trained model, per class"
    s = sub.add_parser("predict", help=helptext, description=helptext)
    add_predict_arguments(s)
    s.set_defaults(func=run_predict)

    helptext = (
        "write a pipeline run folder as a self-contained model folder (config, safetensors weights, text encoder)"
    )
    s = sub.add_parser("export", help=helptext, description=helptext)
    add_export_arguments(s)
    s.set_defaults(func=run_export)
