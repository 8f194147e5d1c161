Feature: Sessions — turns, budgets and KV affinity across the tasks of a conversation

  Scenario: A session comes into being with its first task
    Given orchd is running with its default config
    When I look at session S
    Then the response status is 200
    And the response field "turns" is 0
    When I submit task A in session S
    And I look at session S
    Then the response field "turns" is 1
    And the response field "ttl_ms_remaining" is a positive number

  Scenario: The ninth turn of a session is refused
    Given orchd is running with its default config
    When I submit 8 tasks in session S
    And I submit task I in session S
    Then the response status is 429
    And the error code is "ADMISSION_REJECT"
    And the response field "policy_label" is "session-turns"
    And the response field "retriable" is false

  Scenario: A token budget is reserved at admission and reported
    Given orchd is running with this config:
      """
      [sessions]
      tokens_budget = 100
      """
    When I submit task A in session S with:
      | max_tokens | 60 |
    Then the response status is 202
    And the response header "X-Budget-Tokens-Remaining" is "40"
    When I submit task B in session S with:
      | max_tokens | 60 |
    Then the response status is 429
    And the response field "policy_label" is "budget-tokens"
    When I stream task A to its end
    And I look at session S
    Then the response field "tokens_budget_remaining" is 40

  Scenario: Deleting a session forgets it
    Given orchd is running with its default config
    When I submit task A in session S
    And I delete session S
    Then the response status is 204
    When I look at session S
    Then the response field "turns" is 0
    When I delete session S
    Then the response status is 204

  Scenario: A malformed session id is a 400
    Given orchd is running with its default config
    When I send GET "/v1/sessions/not-a-uuid"
    Then the response status is 400
    And the error code is "INVALID_PARAMS"

  Scenario: A bound on live sessions refuses one more, with retry advice
    Given orchd is running with this config:
      """
      [sessions]
      max_sessions = 2
      """
    When I submit task A in session S1
    And I submit task B in session S2
    And I submit task C in session S3
    Then the response status is 429
    And the error code is "ADMISSION_REJECT"
    And the response field "policy_label" is "sessions-full"
    And the retry advice is consistent
    When I submit task D in session S1
    Then the response status is 202
