//! Tiny random-weight Llama models in the real Hugging Face layout, for tests and the demo.
