#!/usr/bin/env python3
"""The editor's OpenAI HTTP API (`editor-svc --http-listen`) through the official `openai`
package, as an app would call it: the model list, a chat completion, the same one streamed,
a text completion (whole and streamed), a wrong key, and over-long requests. Exits non-zero on the first surprise.

    check_http_api.py --base-url http://127.0.0.1:PORT/v1 --api-key TOKEN
"""
import argparse

import openai


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)

    models = client.models.list().data
    assert len(models) == 1, models
    model = models[0].id
    print(f"models: {model}")

    messages = [{"role": "system", "content": "You summarize conversations."},
                {"role": "user", "content": "Summarize: my order 1234 arrived damaged."}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert isinstance(text, str), whole
    assert 1 <= whole.usage.completion_tokens <= 12, whole.usage
    print(f"chat: {whole.usage.completion_tokens} tokens, finish {whole.choices[0].finish_reason}")

    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    deltas, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            deltas.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(deltas) == text, ("streamed and whole greedy answers differ", "".join(deltas), text)
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage
    assert finish == whole.choices[0].finish_reason, finish
    print(f"stream: {len(deltas)} chunks, the same text")

    prompt = "Customer: my order 1234 arrived damaged.\nSummary:"
    completion = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    text = completion.choices[0].text
    assert isinstance(text, str) and 1 <= completion.usage.completion_tokens <= 8, completion
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt=prompt, max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == text, ("streamed and whole text completions differ", streamed, text)
    print(f"completions: {completion.usage.completion_tokens} tokens, streamed the same")

    wrong = openai.OpenAI(base_url=args.base_url, api_key="not-the-key", max_retries=0)
    try:
        wrong.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        print(f"wrong key: {e.status_code}")

    for name, request in [
        ("max_tokens past the context", dict(messages=messages, max_tokens=1_000_000)),
        ("a prompt past the context", dict(messages=[{"role": "user", "content": "word " * 20000}], max_tokens=8)),
    ]:
        try:
            client.chat.completions.create(model=model, **request)
            raise AssertionError(f"{name} was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.param == "max_tokens", (e.status_code, e.param, e.message)
            print(f"{name}: 400, param {e.param}")
    print("ok")


if __name__ == "__main__":
    main()
