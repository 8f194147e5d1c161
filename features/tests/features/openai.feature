Feature: OpenAI-compatible routes — standard clients on the same queue
  /v1/completions and /v1/chat/completions turn a request into an ordinary task:
  the same admission, queue, frames and metrics, rendered in OpenAI's format for the
  SDKs and load harnesses that speak only it.

  Background:
    Given orchd is running with this config:
      """
      [[pools]]
      id = "small"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 2
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 40
      """

  Scenario: A streamed chat completion is OpenAI's chunks, then usage and [DONE]
    When I send POST "/v1/chat/completions" with the body:
      """
      {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
       "stream": true, "stream_options": {"include_usage": true}}
      """
    Then the response status is 200
    And the response header "x-request-id" is a UUID
    And the OpenAI stream carries 3 tokens, the first saying the role
    And the OpenAI stream ends with finish reason "length", usage and [DONE]

  Scenario: Bad input is refused in OpenAI's shape, naming the field
    When I send POST "/v1/completions" with the body:
      """
      {"model": "m", "prompt": "x", "n": 2}
      """
    Then the response status is 400
    And the OpenAI error is "INVALID_PARAMS" naming "n"

  Scenario: A full queue answers 429 with the retry headers the SDKs read
    Given tasks A, B and C fill pool "small"
    When I send POST "/v1/completions" with the body:
      """
      {"model": "m", "prompt": "x"}
      """
    Then the response status is 429
    And the OpenAI error is "ADMISSION_REJECT" naming nothing
    And the OpenAI retry advice is consistent
