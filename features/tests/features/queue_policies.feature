Feature: Queue policies — who waits, who is refused, who is evicted
  Within a pool, interactive tasks go before batch tasks, first come first served within
  a class. A full queue refuses new tasks ("reject") or makes room by evicting the
  oldest queued batch task, else the oldest queued task ("drop-lru").

  Scenario: Interactive tasks are queued ahead of batch tasks
    Given orchd is running with this config:
      """
      [[pools]]
      id = "one"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 4
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 40
      """
    When I submit task A with:
      | max_tokens | 200 |
    And I submit task B with:
      | priority | "batch" |
    Then the response field "queue_position" is 1
    When I submit task C with:
      | priority | "interactive" |
    Then the response field "queue_position" is 1
    When I submit task D with:
      | priority | "interactive" |
    Then the response field "queue_position" is 2

  Scenario: drop-lru evicts the oldest queued batch task to admit a new one
    Given orchd is running with this config:
      """
      [[pools]]
      id = "lru"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 2
      policy = "drop-lru"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 40
      """
    When I submit task A with:
      | max_tokens | 200 |
    And I submit task B with:
      | priority | "interactive" |
    And I submit task C with:
      | priority | "batch" |
    And I submit task D with:
      | priority | "interactive" |
    Then the response status is 202
    When I stream task C to its end
    Then the stream of task C ends with "error"
    And the "error" frame of task C has "code" equal to "QUEUE_FULL_DROP_LRU"

  Scenario: drop-lru with nothing to evict refuses with retry advice
    Given orchd is running with this config:
      """
      [[pools]]
      id = "noqueue"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 0
      policy = "drop-lru"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 40
      """
    When I submit task A with:
      | max_tokens | 200 |
    And I submit task B
    Then the response status is 429
    And the error code is "QUEUE_FULL_DROP_LRU"
    And the response field "policy_label" is "drop-lru"
    And the retry advice is consistent
