Feature: Engine faults — a failing engine ends only its own streams, with the right error
  The mock engine injects faults on request (`fail_after_tokens`, `stall_after_tokens`,
  a slow `ttft_ms`), so clients and dashboards can be tested against them.

  Background:
    Given orchd is running with this config:
      """
      [stream]
      heartbeat_ms = 100

      [[pools]]
      id = "flaky"
      engine = "llamacpp"
      model_ref = "*"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 10
      fail_after_tokens = 3

      [[pools]]
      id = "stalling"
      engine = "tgi"
      model_ref = "*"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 10
      stall_after_tokens = 2
      decode_timeout_ms = 300

      [[pools]]
      id = "slow-start"
      engine = "triton"
      model_ref = "*"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 600
      tpot_ms = 10

      [[pools]]
      id = "steady"
      engine = "vllm"
      model_ref = "*"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 10
      """

  Scenario: An engine that dies mid-stream ends its task with WORKER_RESET
    When I submit task A with:
      | max_tokens | 8 |
    And I submit task B with:
      | engine     | "vllm" |
      | max_tokens | 8      |
    And I stream task A to its end
    And I stream task B to its end
    Then the stream of task A ends with "error"
    And the "error" frame of task A has "code" equal to "WORKER_RESET"
    And task A streamed 3 tokens
    And the frames of task A are in order
    And the stream of task B ends with "end"
    And task B streamed 8 tokens

  Scenario: An engine that goes silent is cut off by the watchdog
    When I submit task A with:
      | engine     | "tgi" |
      | max_tokens | 8     |
    And I stream task A to its end
    Then the stream of task A ends with "error"
    And the "error" frame of task A has "code" equal to "DECODE_TIMEOUT"
    And task A streamed 2 tokens

  Scenario: A slow first token keeps the stream alive with heartbeats
    When I submit task A with:
      | engine     | "triton" |
      | max_tokens | 4        |
    And I stream task A to its end
    Then the stream of task A ends with "end"
    And task A streamed 4 tokens
    And the stream of task A carried a heartbeat comment
