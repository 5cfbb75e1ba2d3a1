"""`loraops export`: a run in the forms other engines run: GGUF for llama.cpp and Ollama, a folder for vLLM.

command.py (the command), gguf.py (the GGUF files), llamacpp.py (llama.cpp's converters, quantiser and engine),
answers.py (the PEFT answers to reproduce), agreement.py (the proof by generation), ollama.py (the Modelfile),
vllm.py (the vLLM folder), card.py (the export's README), carry.py (what publish --format gguf takes).
"""
