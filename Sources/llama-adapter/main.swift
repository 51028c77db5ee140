print("llama-adapter")
