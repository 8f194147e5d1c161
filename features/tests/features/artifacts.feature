Feature: Artifacts — content-addressed documents, and the transcript of every stream

  Scenario: An artifact round-trips by its content id
    Given orchd is running with its default config
    When I store the artifact:
      """
      {"kind": "plan", "content": {"steps": ["a", "b"]}, "tags": ["demo"]}
      """
    Then the response status is 201
    And the response field "kind" is "plan"
    And the response field "id" is the sha256 of the canonical kind and content
    When I fetch that artifact
    Then the response status is 200
    And the response field "content.steps" is ["a", "b"]

  Scenario: Storing the same content twice gives the same artifact
    Given orchd is running with its default config
    When I store the artifact:
      """
      {"kind": "diff", "content": {"b": 2, "a": 1}}
      """
    And I store the artifact:
      """
      {"content": {"a": 1, "b": 2}, "kind": "diff"}
      """
    Then both artifacts have the same id

  Scenario: An unknown artifact is a 404
    Given orchd is running with its default config
    When I send GET "/v1/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000"
    Then the response status is 404
    And the error code is "INVALID_PARAMS"

  Scenario: Every finished stream is stored as a trace artifact
    Given orchd is running with its default config
    When I submit task A
    And I stream task A to its end
    And I fetch the transcript of task A
    Then the response status is 200
    And the response field "kind" is "trace"

  Scenario: Artifacts in a directory survive a restart
    Given orchd is running with artifacts in a fresh directory
    When I store the artifact:
      """
      {"kind": "summary", "content": {"text": "kept"}}
      """
    And orchd restarts
    And I fetch that artifact
    Then the response status is 200
    And the response field "content.text" is "kept"

  Scenario: An unusable artifact directory is a 500 INTERNAL
    Given orchd is running with artifacts in a directory that cannot be created
    When I store the artifact:
      """
      {"kind": "other", "content": {}}
      """
    Then the response status is 500
    And the error code is "INTERNAL"
