"""Reads a GGUF file written by `arf export-model` with llama.cpp's own Python reader (`gguf`)
and checks it against the base it was trained from: the same architecture, tokenizer and chat
template, the same tensors with the same shapes, norms in f32, and the weights in the encoding
asked for.

usage: check_student_gguf.py STUDENT_GGUF BASE_GGUF EXPECTED_FILE_TYPE EXPECTED_MATRIX_TYPE
Prints "ok" last when every check holds; exits non-zero with the first that does not.
"""

import sys

from gguf import GGMLQuantizationType, GGUFReader


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def main():
    student_path, base_path = sys.argv[1], sys.argv[2]
    file_type, matrix_type = int(sys.argv[3]), GGMLQuantizationType[sys.argv[4]]
    student, base = GGUFReader(student_path), GGUFReader(base_path)

    for key in ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
                "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template",
                "llama.block_count", "llama.embedding_length"):
        assert field(student, key) == field(base, key), f"{key} differs from the base"
    assert field(student, "general.file_type") == file_type, field(student, "general.file_type")

    shapes = {t.name: (list(t.shape), t.tensor_type) for t in student.tensors}
    base_shapes = {t.name: list(t.shape) for t in base.tensors}
    assert {n: s for n, (s, _) in shapes.items()} == base_shapes, "tensors differ from the base"
    types = {}
    for name, (shape, kind) in shapes.items():
        if len(shape) == 1:
            assert kind == GGMLQuantizationType.F32, f"{name}: a norm in {kind.name}"
        types[kind.name] = types.get(kind.name, 0) + 1
    assert matrix_type.name in types, f"no matrix in {matrix_type.name}: {types}"
    print(f"{len(shapes)} tensors: {types}")
    print("ok")


if __name__ == "__main__":
    main()
