Feature: Security — API keys, and what is exempt from them

  Background:
    Given orchd is running with this config:
      """
      [server]
      api_keys = ["secret-one", "secret-two"]
      """

  Scenario: A request without a key is a 401
    Given I send no API key
    When I send GET "/v1/capabilities"
    Then the response status is 401
    And the error code is "INVALID_PARAMS"

  Scenario: A request with an unknown key is a 403
    Given I use the API key "secret-three"
    When I send GET "/v1/capabilities"
    Then the response status is 403

  Scenario: Any configured key is accepted
    Given I use the API key "secret-two"
    When I submit task A
    Then the response status is 202

  Scenario Outline: Operational endpoints are exempt from keys
    Given I send no API key
    When I send GET "<path>"
    Then the response status is 200

    Examples:
      | path     |
      | /metrics |
      | /livez   |
      | /readyz  |

  Scenario: The correlation id is echoed, on errors too
    Given I send no API key
    When I send GET "/v1/capabilities" with header "X-Correlation-Id" set to "trace-42"
    Then the response status is 401
    And the response header "X-Correlation-Id" is "trace-42"

  Scenario: A correlation id is generated when the client sends none
    Given I use the API key "secret-one"
    When I send GET "/v1/capabilities"
    Then the response header "X-Correlation-Id" is a UUID

  Scenario: The paths that do not exist are 404, /v1/replicasets among them
    Given I use the API key "secret-one"
    When I send GET "/v1/replicasets"
    Then the response status is 404
