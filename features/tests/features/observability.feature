Feature: Observability — the Prometheus series after traffic

  Background:
    Given orchd is running with its default config

  Scenario: Every contracted series is present before any traffic
    When I scrape the metrics
    Then the metrics have the series:
      | tasks_enqueued_total                |
      | tasks_started_total                 |
      | tasks_canceled_total                |
      | tasks_rejected_total                |
      | queue_depth                         |
      | kv_cache_usage_ratio                |
      | gpu_utilization                     |
      | vram_used_bytes                     |
      | latency_first_token_ms_bucket       |
      | latency_decode_ms_bucket            |
      | tokens_in_total                     |
      | tokens_out_total                    |
      | admission_backpressure_events_total |
      | catalog_verifications_total         |
      | model_state                         |

  Scenario: Counters move with the traffic
    When I submit task A with:
      | max_tokens | 5 |
    And I stream task A to its end
    And I submit task B with:
      | engine | "vllm" |
    And I scrape the metrics
    Then the metric "tasks_enqueued_total" summed over pool "default" is 1
    And the metric "tasks_started_total" summed over pool "default" is 1
    And the metric "tokens_out_total" summed over pool "default" is 5
    And the metric "latency_first_token_ms_count" summed over pool "default" is 1
    And the metric "tasks_rejected_total" summed over engine "vllm" is 1
