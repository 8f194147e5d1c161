Feature: Tenants — each sees only its own, shares a pool fairly, and has quotas
  Every key belongs to a tenant. A tenant's tasks, sessions and transcripts are its own:
  another tenant asking for them is told they do not exist. When tenants wait for the
  same slots, each gets its share by weight, so a tenant submitting a little is not
  stuck behind another's flood. Quotas refuse with honest advice on when to retry.

  Scenario: Another tenant cannot see, cancel or reuse a tenant's task and session
    Given orchd is running with this config:
      """
      [[tenants]]
      name = "team-a"
      keys = ["key-a"]
      [[tenants]]
      name = "team-b"
      keys = ["key-b"]
      """
    And I use the API key "key-a"
    When I submit task A in session S with:
      | max_tokens | 3 |
    And I stream task A to its end
    Given I use the API key "key-b"
    When I ask for the stream of task A
    Then the response status is 404
    When I cancel task A
    Then the response status is 404
    When I fetch the transcript of task A
    Then the response status is 404
    When I look at session S
    Then the response field "turns" is 0
    When I submit task A again
    Then the response status is 202
    And the response field "task_id" is the id of task A
    Given I use the API key "key-a"
    When I look at session S
    Then the response field "turns" is 1
    When I fetch the transcript of task A
    Then the response status is 200

  Scenario: Only a tenant with the operator role drains a pool
    Given orchd is running with this config:
      """
      [[tenants]]
      name = "ops"
      keys = ["key-ops"]
      role = "operator"
      [[tenants]]
      name = "team-b"
      keys = ["key-b"]
      """
    And I use the API key "key-b"
    When I drain pool "default" with a deadline of 1000 ms
    Then the response status is 403
    And the error message mentions "role operator"
    Given I use the API key "key-ops"
    When I drain pool "default" with a deadline of 1000 ms
    Then the response status is 202

  Scenario: A tenant's task is not stuck behind another tenant's backlog
    Given orchd is running with this config:
      """
      [[pools]]
      id = "one"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 100
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 20
      [[tenants]]
      name = "team-a"
      keys = ["key-a"]
      [[tenants]]
      name = "team-b"
      keys = ["key-b"]
      """
    And I use the API key "key-a"
    When I submit 10 tasks of 100 tokens
    Given I use the API key "key-b"
    When I submit task B
    Then the response field "queue_position" is 1
    When I stream task B to its end
    Then task B streamed 8 tokens
    When I look at the health of pool "one"
    Then the response field "metrics.queue_depth" is at least 7

  Scenario: A tenant at its max_queued is refused with advice
    Given orchd is running with this config:
      """
      [[pools]]
      id = "one"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 100
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 20
      [[tenants]]
      name = "team-a"
      keys = ["key-a"]
      max_queued = 2
      """
    And I use the API key "key-a"
    When I submit 3 tasks of 100 tokens
    And I submit task D
    Then the response status is 429
    And the response field "policy_label" is "tenant-queued"
    And the retry advice is consistent

  Scenario: A tenant over its tokens per minute is refused with advice
    Given orchd is running with this config:
      """
      [[tenants]]
      name = "team-a"
      keys = ["key-a"]
      tokens_per_minute = 20
      """
    And I use the API key "key-a"
    When I submit task A
    And I submit task B
    Then the response status is 202
    When I submit task C
    Then the response status is 429
    And the response field "policy_label" is "tenant-tokens"
    And the retry advice is consistent
