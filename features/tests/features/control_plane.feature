Feature: Control plane — pool health, drain, reload and capabilities

  Background:
    Given orchd is running with this config:
      """
      [[pools]]
      id = "blue"
      engine = "llamacpp"
      engine_version = "b1"
      model_ref = "*"
      slots = 2
      ctx_max = 4096
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 20
      load_ms = 200

      [[pools]]
      id = "green"
      engine = "vllm"
      model_ref = "*"
      slots = 3
      ctx_max = 8192
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 20
      """

  Scenario: A healthy pool reports itself live and ready
    When I look at the health of pool "blue"
    Then the response status is 200
    And the response field "live" is true
    And the response field "ready" is true
    And the response field "draining" is false
    And the response field "metrics.slots_total" is 2
    And the response field "metrics.queue_depth" is 0
    And the response field "metrics.engine" is "llamacpp"
    And the response field "metrics.engine_version" is "b1"

  Scenario: An unknown pool is a 404
    When I look at the health of pool "red"
    Then the response status is 404
    And the error code is "INVALID_PARAMS"

  Scenario: Capabilities are built from the configured pools
    When I send GET "/v1/capabilities"
    Then the response status is 200
    And the response field "api_version" is "1.0.0"
    And the capabilities list engine "llamacpp" with concurrency 2 and ctx_max 4096
    And the capabilities list engine "vllm" with concurrency 3 and ctx_max 8192

  Scenario: A drained pool stops admitting at once and ends its tasks at the deadline
    When I submit task A with:
      | max_tokens | 200 |
    And I drain pool "blue" with a deadline of 300 ms
    Then the response status is 202
    When I look at the health of pool "blue"
    Then the response field "draining" is true
    And the response field "ready" is false
    When I submit task B
    Then the response status is 503
    And the error code is "POOL_UNREADY"
    And the retry advice is consistent
    When I stream task A to its end
    Then the stream of task A ends with "error"
    And the "error" frame of task A has "code" equal to "POOL_UNAVAILABLE"

  Scenario: A reload switches the model atomically
    When I reload pool "blue" with model "llama-3-8b"
    Then the response status is 200
    And the response field "pool_id" is "blue"
    And the response field "model_ref" is "llama-3-8b"
    When I look at the health of pool "blue"
    Then the response field "metrics.model_ref" is "llama-3-8b"
    When I submit task A with:
      | model_ref | "llama-3-8b" |
    Then the response status is 202

  Scenario: A model that cannot be loaded rolls back with a 409
    When I reload pool "blue" with model "llama-3-8b"
    And I reload pool "blue" with model "fail:broken"
    Then the response status is 409
    When I look at the health of pool "blue"
    Then the response field "metrics.model_ref" is "llama-3-8b"
    And the response field "ready" is true

  Scenario: A reload during a reload is a 409
    When I start reloading pool "blue" with model "llama-3-8b"
    And I reload pool "blue" with model "llama-3-70b"
    Then the response status is 409
    When the first reload has answered
    Then the response status is 200

  Scenario: A reload during a drain is a 409; a reload after it brings the pool back
    When I drain pool "blue" with a deadline of 100 ms
    And I reload pool "blue" with model "llama-3-8b"
    Then the response status is 409
    When pool "blue" has finished draining
    And I reload pool "blue" with model "llama-3-8b"
    Then the response status is 200
    When I look at the health of pool "blue"
    Then the response field "ready" is true
    And the response field "draining" is false
