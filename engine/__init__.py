"""tritonforge engine: a small LLM inference engine composed of the registered kernels."""
