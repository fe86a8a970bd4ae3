"""Deploy: a trained policy as one ONNX file with its model card (export, card, provenance check), the safety
filter between a model and the robot, and the onnxruntime policy the policy node runs (ARCHITECTURE.md,
"Policy artifact")."""
