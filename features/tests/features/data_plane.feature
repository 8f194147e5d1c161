Feature: Data plane — tasks are admitted, queued, streamed and canceled
  Clients submit generation tasks; orchd admits them into a bounded queue of a pool
  that serves their engine and model, or refuses them with a reason and retry advice.

  Background:
    Given orchd is running with this config:
      """
      [server]
      shards = 2

      [[pools]]
      id = "small"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 2
      policy = "reject"
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 40
      """

  Scenario: A task is admitted at once and streamed to its end
    When I submit task A with:
      | max_tokens | 6 |
    Then the response status is 202
    And the response field "queue_position" is 0
    And the response field "task_id" is the id of task A
    When I stream task A to its end
    Then task A streamed 6 tokens
    And the stream of task A ends with "end"
    And the "end" frame of task A has "tokens_out" equal to 6

  Scenario: Tasks admitted in a row get queue positions 0, 1, 2
    When I submit task A with:
      | max_tokens | 50 |
    Then the response field "queue_position" is 0
    When I submit task B
    Then the response field "queue_position" is 1
    When I submit task C
    Then the response field "queue_position" is 2
    And the response field "predicted_start_ms" is a positive number

  Scenario: A full queue refuses with 429 and consistent retry advice
    Given tasks A, B and C fill pool "small"
    When I submit task D
    Then the response status is 429
    And the error code is "ADMISSION_REJECT"
    And the response field "policy_label" is "reject"
    And the response field "retriable" is true
    And the retry advice is consistent

  Scenario: Resubmitting the same task is idempotent; changing it is a conflict
    When I submit task A
    Then the response status is 202
    When I submit task A again
    Then the response status is 202
    When I submit task A again with "max_tokens" set to 99
    Then the response status is 409
    And the error code is "INVALID_PARAMS"

  Scenario: Cancel is race-free and reports the tokens produced
    When I submit task A with:
      | max_tokens | 200 |
    And I read 4 frames of task A
    And I cancel task A
    Then the response status is 204
    And the response header "X-Tokens-Out" is a number
    When I read the stream of task A to its end
    Then the stream of task A ends with "end"
    And the "end" frame of task A has "canceled" equal to true
    And task A streamed exactly the number of tokens in X-Tokens-Out
    When I cancel task A
    Then the response status is 204

  Scenario: Canceling an unknown task is a 404
    When I cancel task Z without submitting it
    Then the response status is 404
    And the error code is "INVALID_PARAMS"

  Scenario Outline: Invalid requests are refused with 400 naming the field
    When I submit task A with:
      | <field> | <value> |
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    And the error message mentions "<field>"

    Examples:
      | field      | value          |
      | task_id    | "not-a-uuid"   |
      | ctx        | 0              |
      | max_tokens | 0              |
      | priority   | "urgent"       |
      | workload   | "dance"        |
      | engine     | "gpt"          |
      | deadline_ms | -5            |
      | ctx        | 999999         |

  Scenario: A body that is not JSON is a 400
    When I send POST "/v1/tasks" with the body:
      """
      {"task_id": 
      """
    Then the response status is 400
    And the error code is "INVALID_PARAMS"

  Scenario: No pool for the engine is a 503 that is not worth retrying
    When I submit task A with:
      | engine | "vllm" |
    Then the response status is 503
    And the error code is "POOL_UNAVAILABLE"
    And the response field "retriable" is false

  Scenario: A deadline that cannot be met is refused at admission
    When I submit task A with:
      | max_tokens  | 100 |
      | deadline_ms | 100 |
    Then the response status is 400
    And the error code is "DEADLINE_UNMET"
    And the response field "retriable" is false

  Scenario: A deadline that passes during decode ends the stream with an error
    When I submit task A with:
      | max_tokens      | 100 |
      | expected_tokens | 5   |
      | deadline_ms     | 600 |
    Then the response status is 202
    When I stream task A to its end
    Then the stream of task A ends with "error"
    And the "error" frame of task A has "code" equal to "DEADLINE_UNMET"

  Scenario: A storage fault is a 500 INTERNAL that loses nothing else
    Given orchd is running with artifacts in a directory that cannot be created
    When I store the artifact:
      """
      {"kind": "plan", "content": {"steps": ["a"]}}
      """
    Then the response status is 500
    And the error code is "INTERNAL"
    When I submit task A
    And I stream task A to its end
    Then the stream of task A ends with "end"
