Feature: Server-Sent Events — the stream of a task, frame by frame
  Every frame has an id counting from 0; "started" comes first, then "metrics" and
  "token" frames, then exactly one "end" or "error", and the server closes the stream.

  Background:
    Given orchd is running with this config:
      """
      [stream]
      heartbeat_ms = 100
      metrics_every_tokens = 4

      [[pools]]
      id = "one"
      engine = "llamacpp"
      model_ref = "*"
      slots = 1
      queue_capacity = 4
      [pools.adapter]
      kind = "mock"
      ttft_ms = 0
      tpot_ms = 20
      """

  Scenario: Frames come in order with consecutive ids
    When I submit task A with:
      | max_tokens | 12 |
    And I stream task A to its end
    Then the frames of task A are in order
    And the first frame of task A is "started"
    And the "started" frame of task A has "queue_position" equal to 0
    And the "started" frame of task A has "predicted_start_ms" equal to 0
    And task A streamed 12 tokens
    And the response header "Content-Type" is "text/event-stream"
    And the response header "Cache-Control" is "no-cache"

  Scenario: Metrics frames carry an on-time probability
    When I submit task A with:
      | max_tokens | 12 |
    And I stream task A to its end
    Then task A has at least 2 "metrics" frames
    And every "metrics" frame of task A has "on_time_probability" between 0 and 1
    And every "metrics" frame of task A has "queue_depth"
    And every "metrics" frame of task A has "kv_warmth"

  Scenario: A task admitted under backpressure starts with its queue position
    When I submit task A with:
      | max_tokens | 40 |
    And I submit task B with:
      | max_tokens | 4 |
    Then the response field "queue_position" is 1
    When I stream task B to its end
    Then the "started" frame of task B has "queue_position" equal to 1
    And the first "metrics" frame of task B has "queue_position" equal to 1
    And the frames of task B are in order
    And the stream of task B ends with "end"

  Scenario: A second subscriber replays the whole stream
    When I submit task A with:
      | max_tokens | 8 |
    And I stream task A to its end
    And I stream task A again to its end
    Then both streams of task A are identical

  Scenario: Last-Event-ID resumes after the given frame
    When I submit task A with:
      | max_tokens | 8 |
    And I stream task A to its end
    And I stream task A after frame 3
    Then the resumed stream of task A starts at frame 4
    And the resumed stream of task A matches the full stream from frame 4

  Scenario: An idle stream gets heartbeats
    When I submit task A with:
      | max_tokens | 100 |
    And I submit task B with:
      | max_tokens | 4 |
    And I stream task B to its end
    Then the stream of task B carried a heartbeat comment

  Scenario: Streaming an unknown task is a 404
    When I stream task Z without submitting it
    Then the response status is 404
    And the error code is "INVALID_PARAMS"
