"""MLflow models-from-code entry point of the registered student.

MLflow runs this file (it is never imported by the project): when the model is
logged, to check it, and each time the model is loaded, from the copy stored next
to the ``MLmodel`` file. It builds the pyfunc from code, so the logged model holds
no pickle: the ONNX graph, tokenizer and settings travel as the ``bundle`` artifact
and :meth:`DistilleryOnnxModel.load_context` reads them.
"""

import mlflow.models

from distillery.ml.serve.serving import DistilleryOnnxModel

mlflow.models.set_model(DistilleryOnnxModel())
