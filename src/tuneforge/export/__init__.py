"""Export: merged Hugging Face folders, GGUF files and Ollama Modelfiles."""
